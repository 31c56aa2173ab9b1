package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/smolvm"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// stopTimeout bounds a teardown that must run even after ctx ended.
const stopTimeout = 2 * time.Minute

func envSet(name string) bool {
	_, ok := os.LookupEnv(name)
	return ok
}

// Stop imports the bottle's egress refusals, deletes its machine (always
// with -f) and checks that it is gone. Without a handle it finds the machine by its identity label and
// name. Nothing to delete is success.
func (b *Backend) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	identity := req.Identity
	path := ""
	var names []string
	egressLog := map[string]string{} // by machine
	if req.Handle != nil {
		d, err := decodeHandle(*req.Handle)
		if err != nil {
			return nil, fmt.Errorf("stop: %w", err)
		}
		if identity == "" {
			identity = req.Handle.Identity
		}
		path = d.Smolvm
		names = append(names, d.Machine)
		egressLog[d.Machine] = d.EgressLog
	}
	if identity == "" && len(names) == 0 {
		return nil, errors.New("stop: neither a handle nor an identity")
	}
	if identity != "" {
		if err := checkIdentity(identity); err != nil {
			return nil, fmt.Errorf("stop: %w", err)
		}
		names = append(names, machineName(identity))
	}
	if path == "" {
		p, err := smolvm.Locate(configuredSmolvm())
		if err != nil {
			return nil, fmt.Errorf("stop %s: %w", identity, err)
		}
		path = p
	}
	cli := &smolvm.CLI{Path: path}
	defer b.forgetSecrets(identity)

	ours := func(ms []smolvm.Machine) []string {
		var out []string
		for _, m := range ms {
			match := identity != "" && m.Labels[sdk.LabelIdentity] == identity && ourHome(m.Labels)
			for _, n := range names {
				match = match || m.Name == n
			}
			if match {
				out = append(out, m.Name)
			}
		}
		return out
	}
	ms, err := cli.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("stop %s: %w", identity, err)
	}
	for _, m := range ms {
		if _, ok := egressLog[m.Name]; !ok && m.Labels[sdk.LabelIdentity] != "" {
			egressLog[m.Name] = egressLogOf(m.Labels[sdk.LabelIdentity], m.Labels)
		}
	}
	var removed []string
	for _, n := range ours(ms) {
		// Delete takes smolvm's record of refusals with the machine.
		b.importQuietly(ctx, cli, n, identityOf(ms, n, identity), egressLog[n])
		if err := cli.Delete(ctx, n); err != nil {
			return removed, fmt.Errorf("stop %s: %w", identity, err)
		}
		removed = append(removed, "machine "+n)
	}
	ms, err = cli.List(ctx)
	if err != nil {
		return removed, fmt.Errorf("stop %s: check machines are gone: %w", identity, err)
	}
	if left := ours(ms); len(left) > 0 {
		return removed, fmt.Errorf("stop %s: smolvm still lists %s after delete -f", identity, strings.Join(left, ", "))
	}
	return removed, nil
}

// List reports the machines that carry bot-bottle's labels, and imports
// their egress refusals into their bottles' egress logs.
func (b *Backend) List(ctx context.Context) ([]sdk.Bottle, error) {
	path, err := smolvm.Locate(configuredSmolvm())
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	cli := &smolvm.CLI{Path: path}
	ms, err := cli.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []sdk.Bottle
	for _, m := range ms {
		id := m.Labels[sdk.LabelIdentity]
		if m.Labels[sdk.LabelManaged] != "true" || id == "" || !ourHome(m.Labels) {
			continue
		}
		// Listing is when refusals reach the audit while the bottle runs.
		b.importQuietly(ctx, cli, m.Name, id, egressLogOf(id, m.Labels))
		bt := sdk.Bottle{Identity: id, Agent: m.Labels[sdk.LabelAgent], Status: bottleStatus(m.State),
			StartedAt: m.CreatedAt.RFC3339(), Resources: []string{"machine " + m.Name}}
		if m.Image != nil {
			bt.Image = *m.Image
		}
		out = append(out, bt)
	}
	return out, nil
}

// bottleStatus is a machine's smolvm state (RecordState, src/config.rs:39)
// in the SDK's words: a stopped machine's VM exited cleanly, so its agent
// has too. The other states (created, running, failed, unreachable, frozen)
// are shown as smolvm says them.
func bottleStatus(state string) string {
	if state == smolvm.StateStopped {
		return "exited"
	}
	return state
}

// Commit packs the stopped machine into SNAPDIR/<machine>.smolmachine and
// starts it again. smolvm packs only offline, so the running agent session
// ends. Machines booted from a local archive or rootfs cannot be packed;
// that is refused before anything is stopped.
func (b *Backend) Commit(ctx context.Context, h sdk.Handle, snapshotDir string) (_ sdk.CommitResult, err error) {
	defer markNotFound(&err)
	d, err := decodeHandle(h)
	if err != nil {
		return sdk.CommitResult{}, fmt.Errorf("commit: %w", err)
	}
	switch d.ImageKind {
	case kindArchive, kindRootfs, kindDockerfile:
		return sdk.CommitResult{}, fmt.Errorf("commit %s: smolvm cannot pack a machine booted from a local image (%s), because pack re-creates the image from its registry; give the agent a registry image to commit it (nothing was changed)", h.Identity, describeKind(d))
	}
	if snapshotDir == "" || !filepath.IsAbs(snapshotDir) {
		return sdk.CommitResult{}, fmt.Errorf("commit %s: snapshot dir %q must be an absolute path", h.Identity, snapshotDir)
	}
	if err := os.MkdirAll(snapshotDir, 0o700); err != nil {
		return sdk.CommitResult{}, fmt.Errorf("commit %s: %w", h.Identity, err)
	}
	cli := &smolvm.CLI{Path: d.Smolvm}
	if _, err := cli.Status(ctx, d.Machine); err != nil {
		return sdk.CommitResult{}, fmt.Errorf("commit %s: %w", h.Identity, err)
	}
	if _, err := cli.Output(ctx, "machine", "stop", "--name", d.Machine); err != nil {
		return sdk.CommitResult{}, fmt.Errorf("commit %s: stop machine: %w", h.Identity, err)
	}
	// -o names a stub executable; smolvm writes <o>.smolmachine beside it.
	// A temp name keeps a failed pack from clobbering an earlier snapshot.
	tmp := filepath.Join(snapshotDir, ".pack-"+d.Machine+"-"+randomSuffix())
	final := filepath.Join(snapshotDir, d.Machine+".smolmachine")
	cleanup := func() { os.Remove(tmp); os.Remove(tmp + ".smolmachine") }
	_, perr := cli.Output(ctx, "pack", "create", "--from-vm", d.Machine, "-o", tmp)
	if perr == nil {
		if fi, err := os.Stat(tmp + ".smolmachine"); err != nil || fi.Size() == 0 {
			perr = fmt.Errorf("smolvm pack create wrote no %s.smolmachine", tmp)
		}
	}
	if perr == nil {
		perr = os.Rename(tmp+".smolmachine", final)
	}
	cleanup()
	notes := []string{"the machine was stopped to pack it (smolvm packs offline); the agent session that was running ended"}
	cli, cerr := b.cliFor(h.Identity, d)
	if cerr == nil {
		_, cerr = cli.Output(context.WithoutCancel(ctx), "machine", "start", "--name", d.Machine)
	}
	if perr != nil {
		if cerr != nil {
			return sdk.CommitResult{}, fmt.Errorf("commit %s: pack: %w (and restart failed: %v)", h.Identity, perr, cerr)
		}
		return sdk.CommitResult{}, fmt.Errorf("commit %s: pack: %w", h.Identity, perr)
	}
	if cerr != nil {
		notes = append(notes, "restarting the machine failed: "+cerr.Error())
	}
	return sdk.CommitResult{Image: final, Notes: notes}, nil
}

func describeKind(d handleData) string {
	switch d.ImageKind {
	case kindDockerfile, kindArchive:
		return "docker save archive " + d.Image
	case kindRootfs:
		return "rootfs dir " + d.Image
	}
	return d.ImageKind
}

// Exec runs a one-off command in the running machine, buffered.
func (b *Backend) Exec(ctx context.Context, req sdk.ExecRequest) (_ sdk.ExecResult, err error) {
	defer markNotFound(&err)
	d, err := decodeHandle(req.Handle)
	if err != nil {
		return sdk.ExecResult{}, fmt.Errorf("exec: %w", err)
	}
	if req.User != "" {
		return sdk.ExecResult{}, fmt.Errorf("exec as user %q: %w (smolvm exec has no user option)", req.User, sdk.ErrNotSupported)
	}
	if len(req.Command) == 0 {
		return sdk.ExecResult{}, errors.New("exec: empty command")
	}
	cli, err := b.cliFor(req.Handle.Identity, d)
	if err != nil {
		return sdk.ExecResult{}, err
	}
	wd := req.Workdir
	if wd == "" {
		wd = d.Workdir
	}
	var args []string
	var stdin *strings.Reader
	if req.Stdin != nil {
		args = append(args, "-i")
		stdin = strings.NewReader(string(req.Stdin))
	}
	args = append(args, "-w", wd)
	args = append(args, execEnvArgs(d)...)
	args = append(append(args, "--"), req.Command...)
	var code int
	var out, errb []byte
	if stdin != nil {
		code, out, errb, err = cli.Exec(ctx, d.Machine, stdin, args...)
	} else {
		code, out, errb, err = cli.Exec(ctx, d.Machine, nil, args...)
	}
	if err != nil {
		return sdk.ExecResult{}, fmt.Errorf("exec in %s: %w", req.Handle.Identity, err)
	}
	return sdk.ExecResult{ExitCode: code, Stdout: out, Stderr: errb}, nil
}

// CopyIn unpacks a tar stream at path in the guest.
func (b *Backend) CopyIn(ctx context.Context, h sdk.Handle, path string, tarball []byte) (err error) {
	defer markNotFound(&err)
	d, err := decodeHandle(h)
	if err != nil {
		return fmt.Errorf("copy in: %w", err)
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("copy in: guest path %q must be absolute", path)
	}
	cli, err := b.cliFor(h.Identity, d)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "bot-bottle-copyin-*.tar")
	if err != nil {
		return fmt.Errorf("copy in: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(tarball); err != nil {
		f.Close()
		return fmt.Errorf("copy in: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("copy in: %w", err)
	}
	if err := putTar(ctx, cli, d.Machine, f.Name(), path); err != nil {
		return fmt.Errorf("copy in to %s:%s: %w", h.Identity, path, err)
	}
	return nil
}

// CopyOut returns path from the guest as a tar stream whose top entry is
// path's base name (as Docker's copy does).
func (b *Backend) CopyOut(ctx context.Context, h sdk.Handle, path string) (_ []byte, err error) {
	defer markNotFound(&err)
	d, err := decodeHandle(h)
	if err != nil {
		return nil, fmt.Errorf("copy out: %w", err)
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) == "/" {
		return nil, fmt.Errorf("copy out: guest path %q must be absolute and not /", path)
	}
	cli, err := b.cliFor(h.Identity, d)
	if err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	// A missing path is ErrNotFound (the core reads "no transcript yet"
	// from it), told apart from a tar failure before tar runs.
	if code, _, stderr, err := cli.Exec(ctx, d.Machine, nil, "--", "test", "-e", path); err != nil {
		return nil, fmt.Errorf("copy out %s:%s: %w", h.Identity, path, err)
	} else if code == 1 {
		return nil, fmt.Errorf("copy out %s:%s: %w", h.Identity, path, sdk.ErrNotFound)
	} else if code != 0 {
		return nil, fmt.Errorf("copy out %s:%s: %s", h.Identity, path, smolvm.ErrorMessage(stderr, code))
	}
	guestTar := "/tmp/bot-bottle-out-" + randomSuffix() + ".tar"
	code, _, stderr, err := cli.Exec(ctx, d.Machine, nil, "--", "tar", "-cf", guestTar, "-C", filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return nil, fmt.Errorf("copy out %s:%s: %w", h.Identity, path, err)
	}
	defer func() { _, _, _, _ = cli.Exec(context.WithoutCancel(ctx), d.Machine, nil, "--", "rm", "-f", guestTar) }()
	if code != 0 {
		return nil, fmt.Errorf("copy out %s:%s: tar exited %d: %s", h.Identity, path, code, smolvm.ErrorMessage(stderr, code))
	}
	dir, err := os.MkdirTemp("", "bot-bottle-copyout-")
	if err != nil {
		return nil, fmt.Errorf("copy out: %w", err)
	}
	defer os.RemoveAll(dir)
	local := filepath.Join(dir, "out.tar")
	if err := cli.CopyOut(ctx, d.Machine, guestTar, local); err != nil {
		return nil, fmt.Errorf("copy out %s:%s: %w", h.Identity, path, err)
	}
	return os.ReadFile(local)
}

// ourHome keeps bottles of other bot-bottle homes on this machine out of
// List (and so out of prune).
func ourHome(labels map[string]string) bool {
	home := sdk.HomeID()
	return home == "" || labels[sdk.LabelHome] == home
}

// identityOf is the identity a machine belongs to: its label, else the
// identity being stopped.
func identityOf(ms []smolvm.Machine, name, fallback string) string {
	for _, m := range ms {
		if m.Name == name && m.Labels[sdk.LabelIdentity] != "" {
			return m.Labels[sdk.LabelIdentity]
		}
	}
	return fallback
}
