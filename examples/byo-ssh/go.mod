module github.com/perimeter-sdk/perimeter/examples/byo-ssh

go 1.26.0

require (
	github.com/perimeter-sdk/perimeter v0.1.0
	github.com/pkg/sftp v1.13.12
	golang.org/x/crypto v0.58.0
)

require (
	github.com/kr/fs v0.1.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
