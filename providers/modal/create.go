package modal

import (
	"context"
	"fmt"
	"net/netip"
	"path"
	"time"

	sdk "github.com/modal-labs/libmodal/modal-go"

	"github.com/perimeter-sdk/perimeter/sandbox"
	"github.com/perimeter-sdk/perimeter/sandbox/driver"
)

// Create starts a Modal sandbox from spec and returns once it can run
// commands. Spec fields map to the SDK as follows: Image (a registry tag) or
// Snapshot (an image id from Snapshot) is the image; Resources.CPU,
// Resources.Memory (rounded up to MiB) and Resources.GPU ("A100", "T4:2")
// are the reservation; Timeout (rounded up to whole seconds) is the
// sandbox's lifetime; Env becomes an ephemeral Modal Secret; Labels are
// tags; Ports are encrypted ports; Network none blocks all egress and
// allowlist becomes a CIDR allowlist. Spec.RootFS, Resources.Disk,
// Resources.PIDs and domain names in an allowlist are errors of kind
// ErrNotSupported.
func (p *Provider) Create(ctx context.Context, spec *sandbox.Spec) (driver.Sandbox, error) {
	const op = "create"
	params, err := createParams(spec)
	if err != nil {
		return nil, err
	}
	if len(p.opts.Secrets) > 0 {
		for _, name := range p.opts.Secrets {
			sec, err := p.client.Secrets.FromName(ctx, name, &sdk.SecretFromNameParams{Environment: p.opts.Environment})
			if err != nil {
				return nil, wrap(ctx, "", op, fmt.Errorf("secret %q: %w", name, err))
			}
			params.Secrets = append(params.Secrets, sec)
		}
	}
	if p.opts.Configure != nil {
		if err := p.opts.Configure(spec, params); err != nil {
			return nil, sandbox.NewError(Name, "", op, sandbox.ErrInvalidArgument, fmt.Errorf("Options.Configure: %w", err))
		}
	}

	var img *sdk.Image
	if spec.Snapshot != "" {
		img, err = p.client.Images.FromID(ctx, spec.Snapshot)
		if err != nil {
			return nil, wrap(ctx, "", op, fmt.Errorf("snapshot %q: %w", spec.Snapshot, err))
		}
	} else {
		tag := spec.Image
		if tag == "" {
			tag = p.opts.DefaultImage
		}
		img = p.client.Images.FromRegistry(tag, nil)
	}

	created := time.Now()
	sb, err := p.client.Sandboxes.Create(ctx, p.app, img, params)
	if err != nil {
		return nil, wrap(ctx, "", op, err)
	}
	s := newSandbox(p, sb, spec)
	if err := p.track(s); err != nil {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		sb.Terminate(tctx, nil)
		return nil, err
	}
	s.created = created
	if spec.Timeout > 0 {
		s.expires = created.Add(params.Timeout)
	} else {
		s.expires = created.Add(5 * time.Minute) // the SDK's default lifetime
	}
	fail := func(err error) (driver.Sandbox, error) {
		// Do not leave a sandbox behind that the caller never got.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		sb.Terminate(tctx, nil)
		p.untrack(s)
		return nil, wrap(ctx, sb.SandboxID, op, err)
	}
	if len(spec.Labels) > 0 {
		if err := sb.SetTags(ctx, spec.Labels); err != nil {
			return fail(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, p.opts.ScheduleTimeout)
	defer cancel()
	if err := s.ready(sctx); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fail(err)
	}
	return s, nil
}

// createParams checks spec and maps it to the SDK's parameters.
func createParams(spec *sandbox.Spec) (*sdk.SandboxCreateParams, error) {
	bad := func(kind error, format string, a ...any) (*sdk.SandboxCreateParams, error) {
		return nil, sandbox.Errorf(Name, "", "create", kind, "%s", fmt.Sprintf(format, a...))
	}
	if spec.RootFS != "" {
		return bad(sandbox.ErrNotSupported, "Spec.RootFS: Modal sandboxes start from images (Spec.Image), not host root filesystems")
	}
	r := spec.Resources
	switch {
	case r.Disk != 0:
		return bad(sandbox.ErrNotSupported, "Resources.Disk: Modal has no disk size for sandboxes")
	case r.PIDs != 0:
		return bad(sandbox.ErrNotSupported, "Resources.PIDs: Modal has no process limit for sandboxes")
	case r.CPU < 0:
		return bad(sandbox.ErrInvalidArgument, "Resources.CPU %v is negative", r.CPU)
	case r.Memory < 0:
		return bad(sandbox.ErrInvalidArgument, "Resources.Memory %d is negative", r.Memory)
	case spec.Timeout < 0:
		return bad(sandbox.ErrInvalidArgument, "Spec.Timeout %v is negative", spec.Timeout)
	case spec.Workdir != "" && !path.IsAbs(spec.Workdir):
		return bad(sandbox.ErrInvalidArgument, "Spec.Workdir %q must be an absolute path", spec.Workdir)
	}
	params := &sdk.SandboxCreateParams{
		CPU:     r.CPU,
		GPU:     r.GPU,
		Workdir: spec.Workdir,
		Env:     spec.Env,
	}
	if r.Memory > 0 {
		params.MemoryMiB = int((r.Memory + 1<<20 - 1) >> 20)
	}
	if spec.Timeout > 0 {
		params.Timeout = (spec.Timeout + time.Second - 1).Truncate(time.Second)
	}
	for k := range spec.Labels {
		if k == "" {
			return bad(sandbox.ErrInvalidArgument, "Spec.Labels has an empty key")
		}
	}
	for k := range spec.Env {
		if k == "" {
			return bad(sandbox.ErrInvalidArgument, "Spec.Env has an empty name")
		}
	}
	for _, port := range spec.Ports {
		if port < 1 || port > 65535 {
			return bad(sandbox.ErrInvalidArgument, "Spec.Ports: %d is not a TCP port", port)
		}
		params.EncryptedPorts = append(params.EncryptedPorts, port)
	}
	if n := spec.Network; n != nil {
		switch n.Mode {
		case sandbox.NetworkOpen:
			if len(n.Allow) > 0 {
				return bad(sandbox.ErrInvalidArgument, "Network.Allow is only for the allowlist mode")
			}
		case sandbox.NetworkNone:
			if len(n.Allow) > 0 {
				return bad(sandbox.ErrInvalidArgument, "Network.Allow is only for the allowlist mode")
			}
			params.BlockNetwork = true
		case sandbox.NetworkAllowlist:
			if len(n.Allow) == 0 {
				// Modal reads an empty allowlist as open; nothing allowed
				// is "blocked".
				params.BlockNetwork = true
				break
			}
			for _, a := range n.Allow {
				cidr, err := parseCIDR(a)
				if err != nil {
					return bad(sandbox.ErrNotSupported, "Network.Allow %q: Modal allowlists take CIDR ranges and addresses only, not domain names", a)
				}
				params.CIDRAllowlist = append(params.CIDRAllowlist, cidr)
			}
		default:
			return bad(sandbox.ErrInvalidArgument, "unknown Network.Mode %q (want none, allowlist or open)", n.Mode)
		}
	}
	return params, nil
}

// parseCIDR accepts "10.0.0.0/8" or a bare address, returned as a /32 or /128.
func parseCIDR(s string) (string, error) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		return pfx.Masked().String(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	return netip.PrefixFrom(addr, addr.BitLen()).String(), nil
}
