package toolexec_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/perimeter-sdk/perimeter/providers/vercel"
	"github.com/perimeter-sdk/perimeter/providers/vercel/vercelfake"
	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/toolexec/toolexectest"
)

// TestBatteryVercelFake runs the toolexec battery on the Vercel adapter
// against its fake of the Vercel Sandbox API: the tools depend on the
// contract only, so they must behave the same on a remote provider.
func TestBatteryVercelFake(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the tools' battery runs on the local provider (TestBatteryLocal); on this adapter it runs without -short")
	}
	f := vercelfake.New(&vercelfake.Options{
		RouteURL: func(_ string, port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) },
	})
	t.Cleanup(f.Close)
	p, err := vercel.New(&vercel.Options{
		TeamID: f.TeamID(), ProjectID: f.ProjectID(), Token: vercel.StaticToken(f.Token()),
		BaseURL: f.URL(), RetryBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	toolexectest.Run(t, func(t *testing.T) *sandbox.Sandbox {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sb, err := p.Create(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Terminate(context.Background()) })
		return sb
	}, nil)
}
