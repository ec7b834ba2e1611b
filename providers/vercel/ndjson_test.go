package vercel

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// The fast path decodes log lines exactly as encoding/json does, and falls
// back for anything it does not handle.
func TestLineReaderMatchesEncodingJSON(t *testing.T) {
	datas := []string{"", "plain", "tab\tnl\nnul\x00", "quote\" back\\ slash/", "é 世界 🎉", "\ufffd", string([]byte{0xff, 'a'}), "\u2028"}
	var in strings.Builder
	for _, d := range datas {
		b, _ := json.Marshal(map[string]string{"stream": "stdout", "data": d})
		// encoding/json orders keys: data first; the real order is stream first.
		in.WriteString(`{"stream":"stdout","data":` + string(b[len(`{"data":`):len(b)-len(`,"stream":"stdout"}`)]) + "}\n")
	}
	in.WriteString(`{"stream":"stderr","data":"\ud83c\udf89 \u00e9\/"}` + "\n")
	in.WriteString(`{"data":"reordered","stream":"stdout"}` + "\n")
	in.WriteString(`{"stream":"stdout","data":"lone \ud800"}` + "\n")
	in.WriteString("\n" + `{"command":{"id":"cmd_1","exitCode":3}}` + "\n")
	in.WriteString(`{"stream":"stdout","data":"cut`)

	lr := newLineReader(strings.NewReader(in.String()))
	want := append([]string{}, datas...)
	for i := range want {
		var s string
		b, _ := json.Marshal(want[i])
		json.Unmarshal(b, &s)
		want[i] = s
	}
	want = append(want, "🎉 é/", "reordered", "lone \ufffd")
	for i, w := range want {
		l, data, err := lr.readLine()
		if err != nil || string(data) != w || (l.Stream != "stdout" && l.Stream != "stderr") {
			t.Errorf("line %d: %q %+v %v, want %q", i, data, l, err, w)
		}
	}
	l, _, err := lr.readLine()
	if err != nil || l.Command == nil || *l.Command.ExitCode != 3 {
		t.Errorf("command line: %+v %v", l, err)
	}
	if _, _, err := lr.readLine(); err != io.ErrUnexpectedEOF {
		t.Errorf("a line cut before its newline: %v", err)
	}
}
