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
	g.start("s")
	went := make(chan int64, 2)
	go func() {
		require.NoError(t, g.enter(context.Background(), "s", 2, false))
		went <- 2
	}()
	require.NoError(t, g.enter(context.Background(), "s", 1, false))
	select {
	case <-went:
		t.Fatal("request 2 went before request 1 was handed on")
	default:
	}
	went <- 1
	g.handedOn("s", 1)
	assert.EqualValues(t, 1, <-went)
	assert.EqualValues(t, 2, <-went)
	g.handedOn("s", 2)

	// A session whose requests come from another connection starts its
	// count at the base number; a waiting request gives up with its context.
	require.NoError(t, g.enter(context.Background(), "moved", 57, true))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, g.enter(ctx, "moved", 58, false), context.Canceled, "58 waits for 57")
	g.handedOn("moved", 57)
	require.NoError(t, g.enter(context.Background(), "moved", 58, false))
	// An edge that restarted numbers from 1 again: not blocked.
	require.NoError(t, g.enter(context.Background(), "s", 1, true))
	g.forget("s")
}
