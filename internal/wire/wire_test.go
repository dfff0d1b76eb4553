package wire

import (
	"bytes"
	"encoding/binary"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func doc(t *testing.T, d bson.D) []byte {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func message(opCode int32, body ...[]byte) []byte {
	msg := make([]byte, HeaderLen)
	binary.LittleEndian.PutUint32(msg[4:], 7)
	binary.LittleEndian.PutUint32(msg[8:], 3)
	binary.LittleEndian.PutUint32(msg[12:], uint32(opCode))
	for _, b := range body {
		msg = append(msg, b...)
	}
	binary.LittleEndian.PutUint32(msg, uint32(len(msg)))
	return msg
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func opMsg(flags uint32, sections ...[]byte) []byte {
	return message(OpMsg, append([][]byte{u32(flags)}, sections...)...)
}

func TestCommandName(t *testing.T) {
	find := doc(t, bson.D{{Key: "find", Value: "c"}, {Key: "$db", Value: "d"}})
	seq := append(u32(uint32(4+len("documents\x00")+len(find))), "documents\x00"...)
	seq = append(seq, find...)
	query := message(OpQuery, u32(0), []byte("admin.$cmd\x00"), u32(0), u32(0xffffffff), doc(t, bson.D{{Key: "isMaster", Value: 1}}))
	badBody := append([]byte{0}, find...)
	binary.LittleEndian.PutUint32(badBody[1:], 9999)

	cases := []struct {
		name string
		msg  []byte
		want string // "" means an error
	}{
		{"body only", opMsg(0, append([]byte{0}, doc(t, bson.D{{Key: "findAndModify", Value: "c"}})...)), "findAndModify"},
		{"sequence first", opMsg(0, append([]byte{1}, seq...), append([]byte{0}, doc(t, bson.D{{Key: "insert", Value: "c"}})...)), "insert"},
		{"OP_QUERY", query, "isMaster"},
		{"no sections", opMsg(0), ""},
		{"bad body size", opMsg(0, badBody), ""},
		{"short OP_QUERY", message(OpQuery, u32(0), []byte("admin")), ""},
		{"other opcode", message(2012, u32(0)), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CommandName(tc.msg)
			if tc.want == "" && err == nil {
				t.Fatalf("CommandName = %q, want an error", got)
			}
			if got != tc.want {
				t.Fatalf("CommandName = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestHeader(t *testing.T) {
	ping := append([]byte{0}, doc(t, bson.D{{Key: "ping", Value: 1}})...)
	msg := opMsg(0, ping)
	if RequestID(msg) != 7 || ResponseTo(msg) != 3 || OpCode(msg) != OpMsg {
		t.Errorf("header fields: %d %d %d", RequestID(msg), ResponseTo(msg), OpCode(msg))
	}
	if !ExpectsReply(msg) || ExpectsReply(opMsg(FlagMoreToCome, ping)) {
		t.Error("moreToCome decides whether a reply follows")
	}
	if !ExpectsReply(message(OpQuery, u32(0))) {
		t.Error("an OP_QUERY is always answered")
	}
}

func TestReadMessage(t *testing.T) {
	msg := opMsg(0, append([]byte{0}, doc(t, bson.D{{Key: "ping", Value: 1}})...))
	r := bytes.NewReader(append(append([]byte{}, msg...), msg...))
	for range 2 {
		got, err := ReadMessage(r)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("ReadMessage = %x, %v", got, err)
		}
	}
	if _, err := ReadMessage(r); err == nil {
		t.Error("no error at end of input")
	}
	if _, err := ReadMessage(bytes.NewReader(msg[:len(msg)-1])); err == nil {
		t.Error("no error for a cut message")
	}
	bad := append([]byte{}, msg...)
	binary.LittleEndian.PutUint32(bad, 3)
	if _, err := ReadMessage(bytes.NewReader(bad)); err == nil {
		t.Error("no error for a length shorter than the header")
	}
}
