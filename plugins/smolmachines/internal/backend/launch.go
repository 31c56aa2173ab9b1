package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bot-bottle/bot-bottle/plugins/internal/tarball"
	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/imagebuild"
	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/smolvm"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Launch creates and starts the machine. The agent itself starts at Attach
// (so none of its output is lost), or here with spec.Detach.
func (b *Backend) Launch(ctx context.Context, spec sdk.Spec, _ sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	if progress == nil {
		progress = func(sdk.Progress) {}
	}
	lp, err := b.plan(ctx, spec)
	if err != nil {
		return sdk.Handle{}, err
	}
	for _, w := range lp.warnings {
		b.log.Warn(w, "identity", spec.Identity)
	}
	cli := &smolvm.CLI{Path: lp.Smolvm}
	for _, n := range lp.SecretNames {
		cli.Env = append(cli.Env, n+"="+spec.Env[n])
	}

	image := lp.Image
	if lp.ImageKind == kindDockerfile {
		archive, err := b.buildImage(ctx, lp, spec, progress)
		if err != nil {
			return sdk.Handle{}, err
		}
		image = archive
	}

	progress(sdk.Progress{Stage: "create", Message: "creating machine " + lp.Machine})
	if _, err := cli.Output(ctx, lp.createArgs(image)...); err != nil {
		return sdk.Handle{}, fmt.Errorf("create machine %s: %w", lp.Machine, err)
	}
	fail := func(err error) (sdk.Handle, error) {
		// Leave nothing behind; Stop by identity would also find it.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		if derr := cli.Delete(dctx, lp.Machine); derr != nil {
			b.log.Error("cleanup after failed launch", "machine", lp.Machine, "error", derr)
		}
		return sdk.Handle{}, err
	}
	progress(sdk.Progress{Stage: "start", Message: "starting machine " + lp.Machine})
	if _, err := cli.Output(ctx, "machine", "start", "--name", lp.Machine); err != nil {
		return fail(fmt.Errorf("start machine %s: %w", lp.Machine, err))
	}
	if lp.CopyCwd != "" {
		progress(sdk.Progress{Stage: "copy", Message: "copying " + lp.CopyCwd + " into " + lp.Workdir})
		if err := copyTreeIn(ctx, cli, lp.Machine, lp.CopyCwd, lp.Workdir); err != nil {
			return fail(fmt.Errorf("copy project into %s: %w", lp.Machine, err))
		}
	}
	if lp.Helper != "" {
		if err := installHelper(ctx, cli, lp.Machine, lp.Helper); err != nil {
			return fail(fmt.Errorf("install helper in %s: %w", lp.Machine, err))
		}
	}
	d := handleData{Machine: lp.Machine, Smolvm: lp.Smolvm, Workdir: lp.Workdir, TTY: lp.TTY, Command: lp.Command,
		Env: lp.Env, SecretNames: lp.SecretNames, ImageKind: lp.ImageKind, Image: image, Detached: lp.Detach,
		EgressLog: lp.EgressLog}
	if lp.Detach {
		progress(sdk.Progress{Stage: "agent", Message: "starting the agent detached"})
		if err := startDetached(ctx, cli, d); err != nil {
			return fail(fmt.Errorf("start agent in %s: %w", lp.Machine, err))
		}
	}
	data, err := json.Marshal(d)
	if err != nil {
		return fail(fmt.Errorf("launch %s: %w", spec.Identity, err))
	}
	b.rememberSecrets(spec.Identity, spec.Env)
	return sdk.Handle{Version: handleVersion, Backend: Name, Identity: spec.Identity, Data: data}, nil
}

// buildImage builds a Dockerfile agent with the local Docker Engine, since
// smolvm builds no images, and returns the docker save archive.
func (b *Backend) buildImage(ctx context.Context, lp *launchPlan, spec sdk.Spec, progress func(sdk.Progress)) (string, error) {
	dir, err := archiveDir(spec)
	if err != nil {
		return "", err
	}
	res, err := imagebuild.Build(ctx, imagebuild.Request{
		Dockerfile: lp.Image, ContextDir: lp.ContextDir, Tag: lp.BuildTag, ArchiveDir: dir,
		Labels: map[string]string{sdk.LabelManaged: "true", sdk.LabelAgent: spec.Agent.Name},
	}, func(stage, msg string) { progress(sdk.Progress{Stage: stage, Message: msg}) })
	if errors.Is(err, imagebuild.ErrNoEngine) {
		return "", fmt.Errorf("agent %s is defined by a Dockerfile and smolvm builds no images, so a local Docker Engine must build it: %w", spec.Agent.Name, err)
	}
	if err != nil {
		return "", fmt.Errorf("build image for %s: %w", spec.Agent.Name, err)
	}
	return res.Archive, nil
}

// archiveDir is where docker save archives go: a shared cache (archives are
// named by image ID, so an unchanged image is saved once), else the
// bottle's snapshot dir.
func archiveDir(spec sdk.Spec) (string, error) {
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "bot-bottle", "smolmachines", "images"), nil
	}
	if spec.SnapshotDir != "" {
		return filepath.Join(spec.SnapshotDir, "images"), nil
	}
	return "", errors.New("no cache dir ($XDG_CACHE_HOME or $HOME) and no snapshot dir for the image archive")
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// copyTreeIn copies a host directory into the guest without touching the
// host tree: smolvm's cp moves single files, so the tree travels as one tar
// and is unpacked by the guest's tar.
func copyTreeIn(ctx context.Context, cli *smolvm.CLI, machine, hostDir, guestDir string) error {
	f, err := os.CreateTemp("", "bot-bottle-copy-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := tarTree(f, hostDir); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return putTar(ctx, cli, machine, f.Name(), guestDir)
}

// putTar copies a host tar file into the guest and unpacks it at guestDir.
func putTar(ctx context.Context, cli *smolvm.CLI, machine, hostTar, guestDir string) error {
	guestTar := "/tmp/bot-bottle-in-" + randomSuffix() + ".tar"
	if err := cli.CopyIn(ctx, hostTar, machine, guestTar); err != nil {
		return fmt.Errorf("cp archive in: %w", err)
	}
	code, _, stderr, err := cli.Exec(ctx, machine, nil, "--", "sh", "-c",
		`mkdir -p "$1" && tar -xf "$2" -C "$1"; rc=$?; rm -f "$2"; exit $rc`, "bot-bottle-copy", guestDir, guestTar)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("unpack in guest exited %d: %s", code, smolvm.ErrorMessage(stderr, code))
	}
	return nil
}

// tarTree writes dir's contents (regular files, dirs, symlinks) as a tar.
func tarTree(w io.Writer, dir string) error { return tarball.WriteDir(w, dir) }

// installHelper puts the `bottle` helper at sdk.GuestHelperPath, read-only.
// It is copied rather than mounted: its host dir holds other binaries, and
// /usr is a system path smolvm refuses to mount over.
func installHelper(ctx context.Context, cli *smolvm.CLI, machine, helper string) error {
	dir := filepath.Dir(sdk.GuestHelperPath)
	code, _, stderr, err := cli.Exec(ctx, machine, nil, "--", "mkdir", "-p", dir)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("mkdir %s exited %d: %s", dir, code, smolvm.ErrorMessage(stderr, code))
	}
	if err := cli.CopyIn(ctx, helper, machine, sdk.GuestHelperPath); err != nil {
		return err
	}
	code, _, stderr, err = cli.Exec(ctx, machine, nil, "--", "chmod", "0555", sdk.GuestHelperPath)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("chmod %s exited %d: %s", sdk.GuestHelperPath, code, smolvm.ErrorMessage(stderr, code))
	}
	return nil
}

// execEnvArgs are the -e flags of every agent exec (never secrets).
func execEnvArgs(d handleData) []string {
	var a []string
	for _, e := range d.Env {
		a = append(a, "-e", e)
	}
	return a
}

// startDetached runs the agent with `exec -d` under a wrapper that keeps
// its output and exit code in guestAgentDir, so a later Attach can follow
// it: smolvm cannot reattach to a detached process's stdio.
func startDetached(ctx context.Context, cli *smolvm.CLI, d handleData) error {
	code, _, stderr, err := cli.Exec(ctx, d.Machine, nil, "--", "mkdir", "-p", guestAgentDir)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("mkdir %s exited %d: %s", guestAgentDir, code, smolvm.ErrorMessage(stderr, code))
	}
	args := []string{"machine", "exec", "--name", d.Machine, "-d", "-w", d.Workdir}
	args = append(args, execEnvArgs(d)...)
	args = append(args, "--", "sh", "-c",
		`d=$1; shift; "$@" >"$d/output" 2>&1 </dev/null; echo $? >"$d/exit.tmp"; mv "$d/exit.tmp" "$d/exit"`,
		"bot-bottle-agent", guestAgentDir)
	args = append(args, d.Command...)
	out, err := cli.Output(ctx, args...)
	if err != nil {
		return err
	}
	// exec -d prints the guest process id and a newline
	// (src/cli/machine.rs:2758); anything else means it did not start.
	if _, err := strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
		return fmt.Errorf("smolvm exec -d printed %q, not a process id", strings.TrimSpace(string(out)))
	}
	return nil
}
