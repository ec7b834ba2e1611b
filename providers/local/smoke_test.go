package local

import (
	"bytes"
	"context"
	"testing"

	"github.com/perimeter-sdk/perimeter/sandbox"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	p, err := New(&Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := p.Create(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Terminate(ctx)
	var out, errb bytes.Buffer
	res, err := sandbox.Run(ctx, sb, &sandbox.Cmd{Stdin: bytes.NewReader(nil), Args: []string{"sh", "-c", "id; hostname; pwd; ls /; cat /proc/self/status | grep -E 'Cap|Seccomp|NoNew'; grep -E ' /dev' /proc/self/mountinfo; cat /dev/null; cat /dev/zero | head -c 3 | wc -c; cat /etc/shadow | wc -c; echo err >&2"}, Stdout: &out, Stderr: &errb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v\n%s\n%s", res.Status, out.String(), errb.String())
	info, _ := sb.Info(ctx)
	t.Log(info.Isolation)
}
