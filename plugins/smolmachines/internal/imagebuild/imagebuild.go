// Package imagebuild builds an agent's Dockerfile with the local Docker
// Engine and saves the image as a `docker save` archive, because smolvm
// builds no images but boots such an archive.
package imagebuild

import (
	"github.com/bot-bottle/bot-bottle/plugins/internal/enginestream"

	"github.com/bot-bottle/bot-bottle/plugins/internal/tarball"

	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// Request says what to build and where to keep the archive.
type Request struct {
	Dockerfile string // absolute host path
	ContextDir string // absolute host path; the Dockerfile's dir when empty
	Tag        string
	Labels     map[string]string
	// ArchiveDir receives <image-id>.tar; an archive already there for the
	// same image ID is reused.
	ArchiveDir string
}

// Result names the built image and its archive.
type Result struct {
	ImageID string
	Archive string
	// Reused is true when the archive was already there for this image.
	Reused bool
}

// ErrNoEngine says no Docker Engine answered.
var ErrNoEngine = errors.New("no Docker Engine")

// Build builds req.Dockerfile and saves the image to an archive. progress
// gets the build's output lines.
func Build(ctx context.Context, req Request, progress func(stage, msg string)) (Result, error) {
	if progress == nil {
		progress = func(string, string) {}
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrNoEngine, err)
	}
	defer cli.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = cli.Ping(pctx)
	cancel()
	if err != nil {
		return Result{}, fmt.Errorf("%w answered at %s: %s", ErrNoEngine, cli.DaemonHost(), oneLine(err.Error()))
	}
	ctxDir := req.ContextDir
	if ctxDir == "" {
		ctxDir = filepath.Dir(req.Dockerfile)
	}
	dfName, dfExtra, err := dockerfileInContext(ctxDir, req.Dockerfile)
	if err != nil {
		return Result{}, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeContext(pw, ctxDir, dfName, dfExtra)) }()
	progress("build", fmt.Sprintf("building %s with the Docker Engine", req.Tag))
	resp, err := cli.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Tags: []string{req.Tag}, Dockerfile: dfName, Labels: req.Labels, Remove: true, ForceRemove: true,
	})
	if err != nil {
		pr.CloseWithError(err)
		return Result{}, fmt.Errorf("docker build %s: %s", req.Dockerfile, oneLine(err.Error()))
	}
	defer resp.Body.Close()
	if err := readBuildStream(resp.Body, progress); err != nil {
		return Result{}, fmt.Errorf("docker build %s: %w", req.Dockerfile, err)
	}
	ins, err := cli.ImageInspect(ctx, req.Tag)
	if err != nil {
		return Result{}, fmt.Errorf("inspect built image %s: %s", req.Tag, oneLine(err.Error()))
	}
	res := Result{ImageID: ins.ID}
	if err := os.MkdirAll(req.ArchiveDir, 0o700); err != nil {
		return Result{}, fmt.Errorf("archive dir: %w", err)
	}
	id := strings.TrimPrefix(ins.ID, "sha256:")
	if len(id) > 32 {
		id = id[:32]
	}
	res.Archive = filepath.Join(req.ArchiveDir, id+".tar")
	if fi, err := os.Stat(res.Archive); err == nil && fi.Size() > 0 {
		res.Reused = true
		progress("save", "image unchanged: reusing "+res.Archive)
		return res, nil
	}
	progress("save", "docker save "+req.Tag+" -> "+res.Archive)
	if err := save(ctx, cli, req.Tag, res.Archive); err != nil {
		return Result{}, err
	}
	return res, nil
}

// save writes the image archive atomically, so a half-written archive never
// has the final name.
func save(ctx context.Context, cli *client.Client, ref, dst string) error {
	rc, err := cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return fmt.Errorf("docker save %s: %s", ref, oneLine(err.Error()))
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".save-*.tar")
	if err != nil {
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("docker save %s: %w", ref, err)
	}
	return nil
}

func readBuildStream(r io.Reader, progress func(stage, msg string)) error {
	return enginestream.Read(r, func(m enginestream.Message) {
		for _, l := range strings.Split(m.Stream+m.Status, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				progress("build", l)
			}
		}
	})
}

// dockerfileInContext returns the Dockerfile's name inside the build
// context; a Dockerfile outside the context is added to it under a name of
// its own, as the docker CLI does.
func dockerfileInContext(ctxDir, dockerfile string) (name string, extra []byte, err error) {
	rel, err := filepath.Rel(ctxDir, dockerfile)
	if err == nil && !strings.HasPrefix(rel, "..") && !filepath.IsAbs(rel) {
		if _, err := os.Stat(dockerfile); err != nil {
			return "", nil, fmt.Errorf("dockerfile: %w", err)
		}
		return filepath.ToSlash(rel), nil, nil
	}
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		return "", nil, fmt.Errorf("dockerfile: %w", err)
	}
	return ".bot-bottle.Dockerfile", b, nil
}

// writeContext tars the build context (regular files, dirs and symlinks).
func writeContext(w io.Writer, dir, dfName string, dfExtra []byte) error {
	tw := tar.NewWriter(w)
	if err := tarball.AddDir(tw, dir); err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	if dfExtra != nil {
		if err := tw.WriteHeader(&tar.Header{Name: dfName, Mode: 0o644, Size: int64(len(dfExtra)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(dfExtra); err != nil {
			return err
		}
	}
	return tw.Close()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
