package main

// Every provider of the repository, registered for --provider URLs. The CLI
// is its own module so that linking the heavy ones (Modal pulls gRPC) costs
// the core module nothing.
import (
	_ "github.com/perimeter-sdk/perimeter/providers/cloudflare"
	_ "github.com/perimeter-sdk/perimeter/providers/daytona"
	_ "github.com/perimeter-sdk/perimeter/providers/kubernetes"
	_ "github.com/perimeter-sdk/perimeter/providers/local"
	_ "github.com/perimeter-sdk/perimeter/providers/modal"
	_ "github.com/perimeter-sdk/perimeter/providers/vercel"
)
