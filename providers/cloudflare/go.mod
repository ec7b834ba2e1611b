module github.com/perimeter-sdk/perimeter/providers/cloudflare

go 1.26.0

replace github.com/perimeter-sdk/perimeter => ../..

require (
	github.com/coder/websocket v1.8.15
	github.com/perimeter-sdk/perimeter v0.0.0-00010101000000-000000000000
)
