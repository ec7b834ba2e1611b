module example.com/thirdparty

go 1.26.0

require github.com/perimeter-sdk/perimeter v0.1.0

require (
	github.com/creack/pty v1.1.24 // indirect
	github.com/elastic/go-seccomp-bpf v1.6.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
