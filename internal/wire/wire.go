// Package wire reads MongoDB wire protocol messages just far enough for the
// test server's front and the fault proxy to act per command: whole messages,
// their header fields, and the name of the command they carry.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Wire protocol constants.
const (
	HeaderLen       = 16
	OpQuery         = 2004 // legacy; drivers still send the first hello of a connection with it
	OpMsg           = 2013
	FlagChecksum    = 1 << 0 // OP_MSG flag: a CRC-32C follows the sections
	FlagMoreToCome  = 1 << 1 // OP_MSG flag: no reply follows (request), or more replies follow (reply)
	MaxMessageBytes = 48 << 20
)

// ReadMessage reads one whole wire message, header included.
func ReadMessage(r io.Reader) ([]byte, error) {
	var header [HeaderLen]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.LittleEndian.Uint32(header[:4])))
	if n < HeaderLen || n > MaxMessageBytes {
		return nil, fmt.Errorf("wire: bad message length %d", n)
	}
	msg := make([]byte, n)
	copy(msg, header[:])
	if _, err := io.ReadFull(r, msg[HeaderLen:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// RequestID is the header's requestID; msg must hold a whole header.
func RequestID(msg []byte) int32 { return int32(binary.LittleEndian.Uint32(msg[4:8])) }

// ResponseTo is the header's responseTo: the requestID a reply answers.
func ResponseTo(msg []byte) int32 { return int32(binary.LittleEndian.Uint32(msg[8:12])) }

// OpCode is the header's opCode.
func OpCode(msg []byte) int32 { return int32(binary.LittleEndian.Uint32(msg[12:16])) }

// ExpectsReply reports whether a request is answered: every request is,
// except an OP_MSG with moreToCome set (an unacknowledged write).
func ExpectsReply(msg []byte) bool {
	if OpCode(msg) != OpMsg || len(msg) < HeaderLen+4 {
		return true
	}
	return binary.LittleEndian.Uint32(msg[HeaderLen:])&FlagMoreToCome == 0
}

// CommandName is the first key of the command document: of the body section
// of an OP_MSG, or of the query of an OP_QUERY. It keeps the sender's case
// ("findAndModify").
func CommandName(msg []byte) (string, error) {
	var doc []byte
	var err error
	switch OpCode(msg) {
	case OpMsg:
		doc, err = msgBody(msg)
	case OpQuery:
		doc, err = queryDoc(msg)
	default:
		return "", fmt.Errorf("wire: opcode %d carries no command", OpCode(msg))
	}
	if err != nil {
		return "", err
	}
	elem, err := bson.Raw(doc).IndexErr(0)
	if err != nil {
		return "", err
	}
	return elem.Key(), nil
}

// msgBody returns the body section (kind 0) of an OP_MSG.
func msgBody(msg []byte) ([]byte, error) {
	if len(msg) < HeaderLen+4 {
		return nil, errors.New("wire: short OP_MSG")
	}
	sections := msg[HeaderLen+4:]
	for len(sections) > 0 {
		kind := sections[0]
		sections = sections[1:]
		size, err := docSize(sections)
		if err != nil {
			return nil, err
		}
		if kind == 0 {
			return sections[:size], nil
		}
		sections = sections[size:]
	}
	return nil, errors.New("wire: no body section")
}

// queryDoc returns the query document of an OP_QUERY: after the flags, the
// collection name (a C string), numberToSkip and numberToReturn.
func queryDoc(msg []byte) ([]byte, error) {
	if len(msg) < HeaderLen+4 {
		return nil, errors.New("wire: short OP_QUERY")
	}
	rest := msg[HeaderLen+4:]
	end := 0
	for end < len(rest) && rest[end] != 0 {
		end++
	}
	if end+1+8 > len(rest) {
		return nil, errors.New("wire: short OP_QUERY")
	}
	rest = rest[end+1+8:]
	size, err := docSize(rest)
	if err != nil {
		return nil, err
	}
	return rest[:size], nil
}

// docSize is the length of the BSON document at the start of b, checked to
// fit in b.
func docSize(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, errors.New("wire: short document")
	}
	size := int(int32(binary.LittleEndian.Uint32(b[:4])))
	if size < 5 || size > len(b) {
		return 0, errors.New("wire: bad document size")
	}
	return size, nil
}
