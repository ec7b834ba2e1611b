package tunnel

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEdgeLineKeepsArrivalOrder: a session's requests are numbered and sent
// in the order they arrived; a refused one leaves no gap.
func TestEdgeLineKeepsArrivalOrder(t *testing.T) {
	var l edgeLine
	t1, t2, t3 := l.take("s"), l.take("s"), l.take("s")
	other := l.take("other")
	n, err := other.wait(context.Background())
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "another session has its own line")
	other.handedOn()

	got2 := make(chan int64, 1)
	go func() {
		n, _ := t2.wait(context.Background())
		got2 <- n
	}()
	n, err = t1.wait(context.Background())
	require.NoError(t, err)
	assert.EqualValues(t, 1, n)
	select {
	case n := <-got2:
		t.Fatalf("the second request went (as number %d) before the first was handed on", n)
	default:
	}
	t1.handedOn()
	assert.EqualValues(t, 2, <-got2)
	t2.release() // refused: never handed on
	n, err = t3.wait(context.Background())
	require.NoError(t, err)
	assert.EqualValues(t, 2, n, "no gap for a request that was not sent")
	t3.handedOn()

	// A request that gives up waiting still holds back the one after it
	// until the one before it is done.
	a, b, c := l.take("x"), l.take("x"), l.take("x")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.wait(ctx)
	require.ErrorIs(t, err, context.Canceled)
	b.release()
	gotC := make(chan int64, 1)
	go func() {
		n, _ := c.wait(context.Background())
		gotC <- n
	}()
	select {
	case <-gotC:
		t.Fatal("c overtook a")
	default:
	}
	a.handedOn()
	assert.EqualValues(t, 2, <-gotC)
	c.handedOn()
}

// TestConnectorGateOrder: the connector starts request n of a session only
// after request n-1 was handed to the upstream.
func TestConnectorGateOrder(t *testing.T) {
	var g connectorGate
	g.start(gateKey{"e", "s"})
	went := make(chan int64, 2)
	go func() {
		require.NoError(t, g.enter(context.Background(), gateKey{"e", "s"}, 2, false))
		went <- 2
	}()
	require.NoError(t, g.enter(context.Background(), gateKey{"e", "s"}, 1, false))
	select {
	case <-went:
		t.Fatal("request 2 went before request 1 was handed on")
	default:
	}
	went <- 1
	g.handedOn(gateKey{"e", "s"}, 1)
	assert.EqualValues(t, 1, <-went)
	assert.EqualValues(t, 2, <-went)
	g.handedOn(gateKey{"e", "s"}, 2)

	// A session whose requests come from another connection starts its
	// count at the base number; a waiting request gives up with its context.
	require.NoError(t, g.enter(context.Background(), gateKey{"e", "moved"}, 57, true))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, g.enter(ctx, gateKey{"e", "moved"}, 58, false), context.Canceled, "58 waits for 57")
	g.handedOn(gateKey{"e", "moved"}, 57)
	require.NoError(t, g.enter(context.Background(), gateKey{"e", "moved"}, 58, false))
	// An edge that restarted numbers from 1 again: not blocked.
	require.NoError(t, g.enter(context.Background(), gateKey{"e", "s"}, 1, true))
	g.forget("s")

	// Two edges number one session each on its own: edge 1 at 6 does not
	// wait for edge 2's count, which started at 1.
	bg := context.Background()
	e1, e2 := gateKey{"e1", "x"}, gateKey{"e2", "x"}
	g.start(e1)
	for n := int64(1); n <= 5; n++ {
		require.NoError(t, g.enter(bg, e1, n, false))
		g.handedOn(e1, n)
	}
	require.NoError(t, g.enter(bg, e2, 1, true))
	g.handedOn(e2, 1)
	ctx, cancel = context.WithCancel(bg)
	cancel()
	require.NoError(t, g.enter(ctx, e1, 6, false), "edge 1's next request goes at once")
	g.forget("x")
	g.mu.Lock()
	assert.NotContains(t, g.sessions, e1)
	assert.NotContains(t, g.sessions, e2)
	g.mu.Unlock()
}
