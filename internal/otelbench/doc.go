// Package otelbench measures what the portable layer costs per exec on a real
// sandbox, with the OpenTelemetry SDK installed as a host would install it.
//
// It is a module of its own so that the OpenTelemetry SDK, which only this
// measurement needs, stays out of the core module's requirements. Run:
//
//	go test -run '^$' -bench LayerCost -benchtime 2000x ./internal/otelbench/
//
// The benchmark runs the three paths in turn within each iteration (the
// local provider's driver called directly, the portable layer without hooks,
// and the layer with sandboxotel's hooks reporting to the SDK), so machine
// load falls on all three alike, and reports each path's median and the
// layer's overhead in percent of the direct path.
package otelbench
