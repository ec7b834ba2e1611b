package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/perimeter-sdk/perimeter/tunnel"
)

func init() {
	register(&command{
		name:    "tunnel",
		summary: "run an end of the outbound-only MCP tunnel (connect | edge | serve | certs | anthropic)",
		run:     tunnelCmd,
	})
}

func tunnelUsage(w io.Writer) {
	fmt.Fprintln(w, "usage:")
	fmt.Fprintln(w, "  perimeter tunnel connect --config FILE")
	fmt.Fprintln(w, "  perimeter tunnel edge [--listen ADDR] [--http ADDR] --config FILE")
	fmt.Fprintln(w, "  perimeter tunnel serve [--listen ADDR] --config FILE")
	fmt.Fprintln(w, "  perimeter tunnel certs --dir DIR --edge-name NAME[,NAME] [--connector ID]... [--client NAME]...")
	fmt.Fprintln(w, "  perimeter tunnel anthropic SUBCOMMAND ...   (help: perimeter tunnel anthropic help)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "connect runs a connector inside the private network: it dials the edges")
	fmt.Fprintln(w, "and makes its routes reachable. edge accepts connectors on --listen and")
	fmt.Fprintln(w, "serves each route as an MCP Streamable HTTP endpoint at http://HTTP/<route>.")
	fmt.Fprintln(w, "serve runs a connector's routes (stdio and HTTP MCP servers, with policy and")
	fmt.Fprintln(w, "audit) directly on a local listener, with no carrier: a gateway to put behind")
	fmt.Fprintln(w, "another proxy, such as Anthropic's MCP tunnel.")
	fmt.Fprintln(w, "certs makes the CA, certificates and tokens an edge and its connectors need.")
	fmt.Fprintln(w, "anthropic manages Anthropic MCP tunnels: tunnels, their CAs and their tokens.")
	fmt.Fprintln(w, "See examples/tunnel/ for full configuration files.")
}

func tunnelCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		tunnelUsage(stderr)
		return 2
	}
	switch args[0] {
	case "connect":
		return tunnelConnect(ctx, args[1:], stderr)
	case "edge":
		return tunnelEdge(ctx, args[1:], stderr)
	case "serve":
		return tunnelServe(ctx, args[1:], stderr)
	case "anthropic":
		return tunnelAnthropic(ctx, args[1:], stdout, stderr)
	case "certs":
		return tunnelCerts(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		tunnelUsage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "perimeter tunnel: unknown subcommand %q\n\n", args[0])
	tunnelUsage(stderr)
	return 2
}

func tunnelLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func tunnelConnect(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter tunnel connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "connector configuration `FILE` (YAML)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return flagErrCode(err)
	}
	if *config == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: perimeter tunnel connect --config FILE")
		return 2
	}
	logger, err := tunnelLogger(stderr, *level)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel connect: %v\n", err)
		return 2
	}
	cfg, err := tunnel.LoadConnectorConfig(*config)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel connect: %v\n", err)
		return 1
	}
	opts, err := cfg.Options(logger)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel connect: %v\n", err)
		return 1
	}
	c, err := tunnel.NewConnector(opts)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel connect: %v\n", err)
		return 1
	}
	if err := c.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel connect: %v\n", err)
		return 1
	}
	return 0
}

func tunnelEdge(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter tunnel edge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "edge configuration `FILE` (YAML)")
	listen := fs.String("listen", "", "`ADDR` where connectors dial (overrides listen in the config)")
	httpAddr := fs.String("http", "", "`ADDR` where MCP clients call, plain HTTP (overrides http_listen; default 127.0.0.1:8080)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return flagErrCode(err)
	}
	if *config == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: perimeter tunnel edge [--listen ADDR] [--http ADDR] --config FILE")
		return 2
	}
	logger, err := tunnelLogger(stderr, *level)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
		return 2
	}
	cfg, err := tunnel.LoadEdgeConfig(*config)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
		return 1
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *httpAddr != "" {
		cfg.HTTPListen = *httpAddr
	}
	if cfg.Listen == "" && cfg.WebSocketPath == "" {
		fmt.Fprintln(stderr, "perimeter tunnel edge: no connector address: give --listen or listen (TLS carrier) or websocket_path (WebSocket carrier) in the config")
		return 2
	}
	if cfg.WebSocketPath != "" && (!strings.HasPrefix(cfg.WebSocketPath, "/") || cfg.WebSocketPath == "/" || cfg.WebSocketPath == "/healthz") {
		fmt.Fprintf(stderr, "perimeter tunnel edge: websocket_path %q: want an absolute path such as /tunnel\n", cfg.WebSocketPath)
		return 2
	}
	if cfg.HTTPListen == "" {
		cfg.HTTPListen = "127.0.0.1:8080"
	}
	opts, err := cfg.Options(logger)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
		return 1
	}
	e, err := tunnel.NewEdge(opts)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
		return 1
	}
	handler := e.Handler()
	if cfg.WebSocketPath != "" {
		mux := http.NewServeMux()
		mux.Handle(cfg.WebSocketPath, e.WebSocketHandler())
		mux.Handle("/", e.Handler())
		handler = mux
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	if cfg.HTTPCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.HTTPCertFile, cfg.HTTPKeyFile)
		if err != nil {
			fmt.Fprintf(stderr, "perimeter tunnel edge: http_cert_file: %v\n", err)
			return 1
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.ClientAuth.ClientCAs != nil || opts.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert {
			// Client certificates (MCP clients' and WebSocket
			// connectors') are verified by the handlers against their own
			// CAs; the server only asks for them.
			srv.TLSConfig.ClientAuth = tls.RequestClientCert
		}
	}
	var ln net.Listener
	if cfg.Listen != "" {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
			return 1
		}
	}
	hln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
		return 1
	}
	scheme := "http"
	if srv.TLSConfig != nil {
		scheme = "https"
		hln = tls.NewListener(hln, srv.TLSConfig)
	}
	carriers := []any{}
	if ln != nil {
		carriers = append(carriers, "connectors", ln.Addr().String())
	}
	if cfg.WebSocketPath != "" {
		carriers = append(carriers, "websocket", scheme+"://"+hln.Addr().String()+cfg.WebSocketPath)
	}
	logger.Info("edge listening", append(carriers, "mcp", scheme+"://"+hln.Addr().String())...)
	errc := make(chan error, 2)
	servers := 1
	if ln != nil {
		servers = 2
		go func() { errc <- e.Serve(ln) }()
	}
	go func() { errc <- srv.Serve(hln) }()
	code := 0
	select {
	case <-ctx.Done():
	case err := <-errc:
		fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
		code = 1
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Stop taking new MCP requests, let calls in flight finish (long SSE
	// streams get 10 s), then drop the connectors.
	if srv.Shutdown(shutCtx) != nil {
		srv.Close()
	}
	e.Close()
	for range servers - code {
		if err := <-errc; err != nil && !errors.Is(err, tunnel.ErrEdgeClosed) && !errors.Is(err, http.ErrServerClosed) && code == 0 {
			fmt.Fprintf(stderr, "perimeter tunnel edge: %v\n", err)
			code = 1
		}
	}
	return code
}

func tunnelServe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("perimeter tunnel serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "gateway configuration `FILE` (YAML)")
	listen := fs.String("listen", "", "`ADDR` where MCP clients call (overrides listen; default 127.0.0.1:8080)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return flagErrCode(err)
	}
	if *config == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: perimeter tunnel serve [--listen ADDR] --config FILE")
		return 2
	}
	logger, err := tunnelLogger(stderr, *level)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel serve: %v\n", err)
		return 2
	}
	cfg, err := tunnel.LoadGatewayConfig(*config)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel serve: %v\n", err)
		return 1
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	opts, err := cfg.Options(logger)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel serve: %v\n", err)
		return 1
	}
	g, err := tunnel.NewGateway(opts)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel serve: %v\n", err)
		return 1
	}
	defer g.Close()
	srv := &http.Server{Handler: g.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	hln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "perimeter tunnel serve: %v\n", err)
		return 1
	}
	scheme := "http"
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			hln.Close()
			fmt.Fprintf(stderr, "perimeter tunnel serve: cert_file: %v\n", err)
			return 1
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.ClientAuth.ClientCAs != nil {
			srv.TLSConfig.ClientAuth = tls.RequestClientCert
		}
		hln = tls.NewListener(hln, srv.TLSConfig)
		scheme = "https"
	}
	logger.Info("gateway listening", "mcp", scheme+"://"+hln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(hln) }()
	code := 0
	select {
	case <-ctx.Done():
	case err := <-errc:
		fmt.Fprintf(stderr, "perimeter tunnel serve: %v\n", err)
		return 1
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if srv.Shutdown(shutCtx) != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "perimeter tunnel serve: %v\n", err)
		code = 1
	}
	return code
}
