//go:build !amd64 && !arm64

package local

// syscallNumbers is empty where the filter has no architecture
// (nativeFilterArch refuses it, and an isolated sandbox cannot be created).
var syscallNumbers = map[string]int{}
