// Package tunnel is an outbound-only tunnel for MCP (Model Context Protocol)
// servers: it lets an agent in a host application reach MCP servers inside a
// private network without any inbound firewall rule or public endpoint.
//
// Two ends:
//
//   - A [Connector] runs inside the private network. It dials out, over TLS, to
//     one or more edges, authenticates with a token or a client certificate,
//     and then serves HTTP/2 on the connection it dialed (the roles are
//     reversed: the edge is the HTTP/2 client). It forwards each request to the
//     route's upstream: an MCP Streamable HTTP server (refused unless its
//     address is inside the connector's CIDR allowlist), or a stdio MCP server
//     it launches from its own fixed configuration, one child process per MCP
//     session. It never runs a command named in a request.
//   - An [Edge] is embedded in the host application. It accepts and
//     authenticates connectors before anything else is reachable, and serves
//     each route as an MCP Streamable HTTP endpoint through [Edge.Handler],
//     which the host mounts. [Edge.HTTPClient] and [Edge.ClientTransport] give
//     the host's own agent an in-process client for a route.
//
// Streamable HTTP passes through unchanged: POST, GET and DELETE; SSE
// responses are flushed event by event; the session, protocol-version,
// Mcp-Method and Mcp-Name headers; Authorization, WWW-Authenticate and
// /.well-known/* (OAuth discovery) untouched. The tunnel's own credentials
// live only in the handshake on the carrier connection and are never part of
// any forwarded request.
//
// Both ends apply a [Policy] to each route: Origin and MCP-Protocol-Version
// checks, a request body cap, and allow/deny lists of JSON-RPC methods and
// tool names read from the body (and checked against the Mcp-Method and
// Mcp-Name headers when a client sends them). Each MCP call yields one
// log/slog audit record and updates a [Metrics] sink.
package tunnel
