package main

// The providers of the core module, registered for --provider URLs. Modal
// lives in its own module (it pulls gRPC) and is not linked into this binary.
import (
	_ "github.com/perimeter-sdk/perimeter/providers/local"
	_ "github.com/perimeter-sdk/perimeter/providers/vercel"
)
