package kube

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"

	"github.com/bot-bottle/bot-bottle/plugins/internal/buildsrc"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// InitBinary is the helper's executable name; the plugin looks for it next
// to its own executable, where `make build` puts both, then on $PATH.
const InitBinary = "bot-bottle-kube-init"

// image is an image reference as the pod names it.
type image struct {
	ref    string
	policy corev1.PullPolicy
}

// agentImage resolves the agent's image: a Dockerfile (the per-bottle one
// first) is built with the local engine and loaded into the cluster; an
// image reference the local engine has is loaded too; any other is pulled
// by the cluster.
func (b *Backend) agentImage(ctx context.Context, spec sdk.Spec, progress func(sdk.Progress)) (image, error) {
	df := spec.BottleDockerfile
	if df == "" {
		df = spec.Agent.Dockerfile
	}
	name := sdk.Slug(spec.Agent.Name)
	if name == "" {
		name = "agent"
	}
	var id string
	switch {
	case df != "":
		progress(sdk.Progress{Stage: "build", Message: "building the agent image with the local engine"})
		out, err := b.docker(ctx, nil, "build", "-q", "-f", df, buildsrc.ContextDir(spec.Agent, df))
		if err != nil {
			return image{}, fmt.Errorf("kubernetes: build %s: %w", df, err)
		}
		id = strings.TrimSpace(out)
	case spec.Agent.Image != "":
		out, err := b.docker(ctx, nil, "image", "inspect", "-f", "{{.Id}}", spec.Agent.Image)
		if err != nil {
			// Not built here: the cluster pulls it.
			return image{ref: spec.Agent.Image, policy: corev1.PullIfNotPresent}, nil
		}
		id = strings.TrimSpace(out)
	default:
		return image{}, fmt.Errorf("kubernetes: agent %s names neither an image nor a Dockerfile", spec.Agent.Name)
	}
	return b.loaded(ctx, id, b.cfg.ImageRepo+"/"+name, progress)
}

// loaded tags the local engine's image id as repo:<id> and makes the
// cluster have it.
func (b *Backend) loaded(ctx context.Context, id, repo string, progress func(sdk.Progress)) (image, error) {
	short := strings.TrimPrefix(id, "sha256:")
	if len(short) < 12 {
		return image{}, fmt.Errorf("kubernetes: the engine returned no image id (%q)", id)
	}
	ref := repo + ":" + short[:12]
	if _, err := b.docker(ctx, nil, "tag", id, ref); err != nil {
		return image{}, fmt.Errorf("kubernetes: tag %s: %w", ref, err)
	}
	if len(b.cfg.ImageLoad) == 0 {
		return image{}, fmt.Errorf("kubernetes: %s was built on this machine and the cluster cannot pull it: set image_load in the plugin's config (a command that loads an image into a local cluster)", ref)
	}
	// One load at a time per image, so that concurrent launches load it once.
	// The lock files live in the user's cache, one per image reference.
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "bot-bottle", "k8s-load")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return image{}, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, hash(ref)[:16]+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return image{}, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return image{}, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if len(b.cfg.ImagePresent) > 0 {
		if _, err := run(ctx, nil, append(b.cfg.ImagePresent, ref)...); err == nil {
			return image{ref: ref, policy: corev1.PullNever}, nil
		}
	}
	progress(sdk.Progress{Stage: "load", Message: "loading " + ref + " into the cluster"})
	if _, err := run(ctx, nil, append(b.cfg.ImageLoad, ref)...); err != nil {
		return image{}, fmt.Errorf("kubernetes: image_load %s: %w", ref, err)
	}
	return image{ref: ref, policy: corev1.PullNever}, nil
}

// initImage is the image of the pod's init container: the configured one,
// or one made here from the helper binary and the `bottle` helper
// (Spec.HelperBinary, static; none when it is "").
func (b *Backend) initImage(ctx context.Context, helper string, progress func(sdk.Progress)) (image, error) {
	if b.cfg.InitImage != "" {
		return image{ref: b.cfg.InitImage, policy: corev1.PullIfNotPresent}, nil
	}
	bin, err := locateInit()
	if err != nil {
		return image{}, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return image{}, err
	}
	var helperData []byte
	if helper != "" {
		if helperData, err = os.ReadFile(helper); err != nil {
			return image{}, fmt.Errorf("kubernetes: read the bottle helper: %w", err)
		}
	}
	tag := b.cfg.ImageRepo + "/kube-init:build-" + hash(string(data) + "\x00" + string(helperData))[:12]
	out, err := b.docker(ctx, nil, "image", "inspect", "-f", "{{.Id}}", tag)
	if err != nil {
		dir, err := os.MkdirTemp("", "bot-bottle-kube-init-")
		if err != nil {
			return image{}, err
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "kube-init"), data, 0o555); err != nil {
			return image{}, err
		}
		df := "FROM scratch\nCOPY kube-init /kube-init\n"
		if helperData != nil {
			if err := os.WriteFile(filepath.Join(dir, "bottle"), helperData, 0o555); err != nil {
				return image{}, err
			}
			df += "COPY bottle /bottle\n"
		}
		df += "ENTRYPOINT [\"/kube-init\"]\n"
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
			return image{}, err
		}
		if out, err = b.docker(ctx, nil, "build", "-q", "-t", tag, dir); err != nil {
			return image{}, fmt.Errorf("kubernetes: build the kube-init image: %w", err)
		}
	}
	return b.loaded(ctx, strings.TrimSpace(out), b.cfg.ImageRepo+"/kube-init", progress)
}

// locateInit finds the helper binary and checks that it runs in an image
// that holds nothing else.
func locateInit() (string, error) {
	p := ""
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			if c := filepath.Join(filepath.Dir(exe), InitBinary); isFile(c) {
				p = c
			}
		}
	}
	if p == "" {
		lp, err := exec.LookPath(InitBinary)
		if err != nil {
			return "", fmt.Errorf("kubernetes: %s is neither next to the plugin nor on $PATH: build it with `make build`", InitBinary)
		}
		p = lp
	}
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("kubernetes: %s is not a Linux executable: %v", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", fmt.Errorf("kubernetes: %s is dynamically linked; build it with CGO_ENABLED=0", p)
		}
	}
	return p, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func (b *Backend) docker(ctx context.Context, stdin []byte, args ...string) (string, error) {
	return run(ctx, stdin, append([]string{b.cfg.Docker}, args...)...)
}

// run runs argv and returns its stdout; a failure carries the last line
// of its stderr.
func run(ctx context.Context, stdin []byte, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		return "", fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), err, strings.TrimSpace(lines[len(lines)-1]))
	}
	return out.String(), nil
}

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
