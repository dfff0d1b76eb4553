package mongolock_test

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The model that linearizability_test.go checks histories against: per
// document, a mutex whose acquisitions carry fencing tokens, and a register
// (the guarded counter) written only with a token greater than the one it
// holds.

// opKind is what one recorded operation did.
type opKind string

const (
	opAcquire opKind = "acquire"  // returned a Lock: the document was free, the token new
	opUnknown opKind = "acquire?" // returned an error: it may have taken a lock no one knows of
	opRelease opKind = "release"  // Release returned nil: this acquisition freed the document
	opLose    opKind = "lose"     // the acquisition ended without its release: taken over, broken, or unknown
	opFence   opKind = "fence"    // a conditional write of the holder's token to the guarded counter
)

// linOp is one operation as a child records it. Call and Return are wall
// clock nanoseconds (all processes run on one machine); Return 0 means the
// operation may take effect at any time after Call, to the end of history.
type linOp struct {
	Client  int    `json:"c"`
	Kind    opKind `json:"k"`
	Doc     string `json:"d"`
	Acq     int64  `json:"a"` // the acquisition, unique across processes
	Token   int64  `json:"t,omitempty"`
	Applied *bool  `json:"ap,omitempty"` // a fenced write's outcome; nil when unknown
	Call    int64  `json:"s"`
	Return  int64  `json:"r"`
}

// lockState is one document's state: who holds it (0 for no one we know
// of), the last token handed out, and the guarded counter.
type lockState struct {
	holder int64
	last   int64
	fence  int64
}

// lockModel is the sequential specification. An acquire of unknown outcome
// changes nothing we can see: had it taken the lock, nobody else could have
// held the document meanwhile, and its token is merely skipped (tokens must
// increase, not be consecutive); the sweep frees such a lock. A lose ends
// an acquisition at some point of its interval, which is what makes a lease
// take-over legal. A fenced write of unknown outcome may or may not have
// been applied.
var lockModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byDoc := map[string][]porcupine.Operation{}
		for _, op := range history {
			d := op.Input.(linOp).Doc
			byDoc[d] = append(byDoc[d], op)
		}
		keys := make([]string, 0, len(byDoc))
		for k := range byDoc {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byDoc[k])
		}
		return out
	},
	Init: func() []any { return []any{lockState{}} },
	Step: func(state, input, _ any) []any {
		s, op := state.(lockState), input.(linOp)
		switch op.Kind {
		case opAcquire:
			if s.holder != 0 || op.Token <= s.last {
				return nil
			}
			return []any{lockState{holder: op.Acq, last: op.Token, fence: s.fence}}
		case opUnknown:
			return []any{s}
		case opRelease, opLose:
			if s.holder != op.Acq {
				return nil
			}
			return []any{lockState{last: s.last, fence: s.fence}}
		case opFence:
			written := lockState{holder: s.holder, last: s.last, fence: op.Token}
			switch {
			case op.Applied == nil && op.Token > s.fence:
				return []any{s, written}
			case op.Applied == nil:
				return []any{s}
			case *op.Applied && op.Token > s.fence:
				return []any{written}
			case !*op.Applied && op.Token <= s.fence:
				return []any{s}
			}
			return nil
		}
		return nil
	},
	DescribeOperation: func(input, _ any) string {
		op := input.(linOp)
		switch op.Kind {
		case opFence:
			out := "?"
			if op.Applied != nil {
				out = fmt.Sprint(*op.Applied)
			}
			return fmt.Sprintf("fence(%d) -> %s", op.Token, out)
		case opAcquire:
			return fmt.Sprintf("acquire #%d -> token %d", op.Acq, op.Token)
		}
		return fmt.Sprintf("%s #%d", op.Kind, op.Acq)
	},
	DescribeState: func(state any) string {
		s := state.(lockState)
		return fmt.Sprintf("holder #%d, last token %d, counter %d", s.holder, s.last, s.fence)
	},
}

// operations turns recorded ops into Porcupine's, a pending one returning at
// the end of history.
func operations(ops []linOp) []porcupine.Operation {
	end := int64(0)
	for _, op := range ops {
		end = max(end, op.Call, op.Return)
	}
	out := make([]porcupine.Operation, len(ops))
	for i, op := range ops {
		ret := op.Return
		if ret == 0 {
			ret = end + 1
		}
		out[i] = porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Return: ret}
	}
	return out
}

// The model's rules, on histories written by hand.
func TestLockModel(t *testing.T) {
	yes, no := true, false
	acq := func(a, tok, call, ret int64) linOp {
		return linOp{Kind: opAcquire, Doc: "d", Acq: a, Token: tok, Call: call, Return: ret}
	}
	end := func(k opKind, a, call, ret int64) linOp {
		return linOp{Kind: k, Doc: "d", Acq: a, Call: call, Return: ret}
	}
	fence := func(tok int64, applied *bool, call, ret int64) linOp {
		return linOp{Kind: opFence, Doc: "d", Token: tok, Applied: applied, Call: call, Return: ret}
	}
	cases := []struct {
		name string
		ops  []linOp
		want porcupine.CheckResult
	}{
		{"one holder after another", []linOp{acq(1, 1, 1, 2), end(opRelease, 1, 3, 4), acq(2, 2, 5, 6), end(opRelease, 2, 7, 8)}, porcupine.Ok},
		{"two holders at once", []linOp{acq(1, 1, 1, 2), acq(2, 2, 3, 4), end(opRelease, 2, 5, 6), end(opRelease, 1, 7, 8)}, porcupine.Illegal},
		{"a take-over after a loss found later", []linOp{acq(1, 1, 1, 2), acq(2, 2, 3, 4), end(opLose, 1, 1, 9), end(opRelease, 2, 5, 6)}, porcupine.Ok},
		{"a release of unknown outcome", []linOp{acq(1, 1, 1, 2), end(opLose, 1, 1, 0), acq(2, 2, 5, 6)}, porcupine.Ok},
		{"a token that does not increase", []linOp{acq(1, 2, 1, 2), end(opRelease, 1, 3, 4), acq(2, 2, 5, 6)}, porcupine.Illegal},
		{"a skipped token (a stranded acquire)", []linOp{acq(1, 1, 1, 2), end(opRelease, 1, 3, 4), end(opUnknown, 3, 5, 0), acq(2, 3, 7, 8)}, porcupine.Ok},
		{"the counter takes a greater token", []linOp{fence(2, &yes, 1, 2), fence(1, &no, 3, 4), fence(3, &yes, 5, 6)}, porcupine.Ok},
		{"the counter takes a smaller token", []linOp{fence(2, &yes, 1, 2), fence(1, &yes, 3, 4)}, porcupine.Illegal},
		{"a counter write of unknown outcome", []linOp{fence(2, nil, 1, 0), fence(1, &yes, 3, 4), fence(2, &yes, 5, 6)}, porcupine.Ok},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(lockModel.ToModel(), operations(c.ops), 10*time.Second); got != c.want {
				t.Fatalf("%v: %s; want %s", c.ops, got, c.want)
			}
		})
	}
}
