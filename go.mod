module github.com/perimeter-sdk/perimeter

go 1.26

require github.com/coder/websocket v1.8.14
