package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/buildctx"
	"github.com/bot-bottle/bot-bottle/plugins/internal/enginestream"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Progress stages this backend reports.
const (
	StageImage     = "image"     // which image is used, cache hits
	StageBuild     = "build"     // one line of build output
	StagePull      = "pull"      // pull progress
	StageNetwork   = "network"   // the bottle's network exists
	StageContainer = "container" // the bottle's container exists
	StageStart     = "start"
	StageEgress    = "egress" // the egress proxy: its image, container, rules
)

// imageRef is an image the bottle will run, resolved to its ID.
type imageRef struct {
	ID   string
	Name string
	// User is the image's configured user.
	User string
}

// resolveImage produces the image of src: inspects a committed or named image
// (pulling a missing named one), or builds a Dockerfile unless an image of the
// same content digest exists.
func (b *Backend) resolveImage(ctx context.Context, c *client.Client, spec sdk.Spec, src source, labels map[string]string, progress func(sdk.Progress)) (imageRef, error) {
	switch src.Kind {
	case srcCommitted:
		ref, err := inspectRef(ctx, c, src.Image)
		if err != nil {
			return ref, err
		}
		progress(sdk.Progress{Stage: StageImage, Message: "using committed image " + src.Image, ID: ref.ID})
		return ref, nil
	case srcImage:
		ref, err := inspectRef(ctx, c, src.Image)
		if err == nil {
			progress(sdk.Progress{Stage: StageImage, Message: "using image " + src.Image, ID: ref.ID})
			return ref, nil
		}
		if !isNotFound(err) {
			return ref, err
		}
		if err := pull(ctx, c, src.Image, progress); err != nil {
			return imageRef{}, err
		}
		return inspectRef(ctx, c, src.Image)
	}
	var dockerfile []byte
	if src.Dockerfile != "" {
		var err error
		if dockerfile, err = os.ReadFile(src.Dockerfile); err != nil {
			return imageRef{}, fmt.Errorf("read Dockerfile: %w", err)
		}
	} else {
		dockerfile = []byte(src.DockerfileText)
	}
	bc, err := buildctx.Open(src.ContextDir, dockerfile)
	if err != nil {
		return imageRef{}, err
	}
	digest, err := bc.Digest(ctx)
	if err != nil {
		return imageRef{}, err
	}
	if ref, ok, err := cachedImage(ctx, c, digest); err != nil {
		return imageRef{}, err
	} else if ok {
		progress(sdk.Progress{Stage: StageImage, Message: "using cached image " + ref.Name + " (unchanged " + src.describe() + ")", ID: ref.ID})
		return ref, nil
	}
	tag := "bot-bottle-agent/" + repoComponent(spec.Agent.Name) + ":" + digest[:12]
	imgLabels := map[string]string{}
	for k, v := range labels {
		imgLabels[k] = v
	}
	imgLabels[LabelDigest] = digest
	imgLabels[LabelKind] = KindAgent
	imgLabels[sdk.LabelAgent] = spec.Agent.Name
	progress(sdk.Progress{Stage: StageImage, Message: "building " + tag + " from " + src.describe()})
	id, err := b.build(ctx, c, src.ContextDir, dockerfile, tag, imgLabels, progress)
	if err != nil {
		return imageRef{}, fmt.Errorf("build %s: %w", src.describe(), err)
	}
	ref, err := inspectRef(ctx, c, id)
	ref.Name = tag
	return ref, err
}

func inspectRef(ctx context.Context, c *client.Client, ref string) (imageRef, error) {
	ii, err := c.ImageInspect(ctx, ref)
	if err != nil {
		return imageRef{}, engineErr(c, "inspect image "+ref, err)
	}
	r := imageRef{ID: ii.ID, Name: ref}
	if ii.Config != nil {
		r.User = ii.Config.User
	}
	return r, nil
}

// cachedImage finds an agent image built from the same content digest.
func cachedImage(ctx context.Context, c *client.Client, digest string) (imageRef, bool, error) {
	return cachedImageOfKind(ctx, c, KindAgent, digest)
}

// cachedImageOfKind finds an image of kind made from the same content digest.
func cachedImageOfKind(ctx context.Context, c *client.Client, kind, digest string) (imageRef, bool, error) {
	imgs, err := c.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelDigest+"="+digest),
		filters.Arg("label", LabelKind+"="+kind),
	)})
	if err != nil {
		return imageRef{}, false, engineErr(c, "look up cached image", err)
	}
	for _, im := range imgs {
		name := im.ID
		if len(im.RepoTags) > 0 {
			name = im.RepoTags[0]
		}
		ref, err := inspectRef(ctx, c, im.ID)
		if isNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return imageRef{}, false, err
		}
		ref.Name = name
		return ref, true, nil
	}
	return imageRef{}, false, nil
}

// build sends the context to the engine's builder and streams its output as
// progress. It returns the new image's ID.
func (b *Backend) build(ctx context.Context, c *client.Client, dir string, dockerfile []byte, tag string, labels map[string]string, progress func(sdk.Progress)) (string, error) {
	// Labels go in as one LABEL line: the classic builder turns each
	// build-option label into a step of its own, a container each.
	bc, err := buildctx.Open(dir, withLabels(dockerfile, labels))
	if err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(bc.WriteTar(ctx, pw)) }()
	defer pr.Close()
	opts := build.ImageBuildOptions{
		Dockerfile:  buildctx.DockerfileName,
		Remove:      true,
		ForceRemove: true,
		// The classic builder works on every engine and needs no session;
		// the images are small layers over a local base.
		Version: build.BuilderV1,
	}
	if tag != "" {
		opts.Tags = []string{tag}
	}
	resp, err := c.ImageBuild(ctx, pr, opts)
	if err != nil {
		return "", engineErr(c, "start build", err)
	}
	defer resp.Body.Close()
	var id string
	err = enginestream.Read(resp.Body, func(m enginestream.Message) {
		if m.Aux != nil {
			if i := m.ImageID(); i != "" {
				id = i
			}
			return
		}
		if s := strings.TrimRight(m.Stream, "\r\n"); s != "" {
			for _, line := range strings.Split(s, "\n") {
				progress(sdk.Progress{Stage: StageBuild, Message: line, ID: tag})
			}
		}
		if m.Status != "" {
			progress(sdk.Progress{Stage: StageBuild, Message: m.Status, ID: m.ID, Current: m.ProgressDetail.Current, Total: m.ProgressDetail.Total})
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", err
	}
	if id == "" {
		if tag == "" {
			return "", errors.New("the engine reported no image ID")
		}
		ref, err := inspectRef(ctx, c, tag)
		if err != nil {
			return "", err
		}
		id = ref.ID
	}
	return id, nil
}

func pull(ctx context.Context, c *client.Client, ref string, progress func(sdk.Progress)) error {
	progress(sdk.Progress{Stage: StagePull, Message: "pulling " + ref})
	rc, err := c.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return engineErr(c, "pull "+ref, err)
	}
	defer rc.Close()
	err = enginestream.Read(rc, func(m enginestream.Message) {
		if m.Status != "" {
			progress(sdk.Progress{Stage: StagePull, Message: m.Status, ID: m.ID, Current: m.ProgressDetail.Current, Total: m.ProgressDetail.Total})
		}
	})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	return nil
}

// buildDerived builds the per-bottle image that holds a copy of the project
// at workdir, owned by the user the agent runs as.
func (b *Backend) buildDerived(ctx context.Context, c *client.Client, spec sdk.Spec, base imageRef, user string, labels map[string]string, progress func(sdk.Progress)) (imageRef, error) {
	workdir := workdirOf(spec.Agent)
	var df strings.Builder
	df.WriteString(fromImage(base.ID))
	chown := ""
	if u := strings.TrimSpace(user); u != "" && u != "root" && u != "0" && !strings.HasPrefix(u, "0:") && !strings.HasPrefix(u, "root:") {
		chown = "--chown=" + u + " "
	}
	js, _ := json.Marshal([]string{".", workdir})
	fmt.Fprintf(&df, "COPY %s%s\n", chown, js)
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	l[LabelKind] = KindDerived
	// Built FROM an agent image, it would inherit that image's cache key.
	l[LabelDigest] = ""
	tag := "bot-bottle-cwd/" + spec.Identity + ":latest"
	progress(sdk.Progress{Stage: StageImage, Message: "copying " + spec.Cwd + " into " + tag + " at " + workdir})
	id, err := b.build(ctx, c, spec.Cwd, []byte(df.String()), tag, l, progress)
	if err != nil {
		return imageRef{}, fmt.Errorf("copy project %s into an image: %w", spec.Cwd, err)
	}
	ref, err := inspectRef(ctx, c, id)
	if err != nil {
		return ref, err
	}
	ref.Name = tag
	return ref, nil
}

// fromImage starts a Dockerfile that builds on the image id. Its first step
// clears the kind and cache key the image's labels would pass on: the
// builder's intermediate images (a moment top-level each, and left behind by
// a failed build) must never pass for a cached image of that kind and
// digest. The real labels come last, with withLabels.
func fromImage(id string) string {
	return fmt.Sprintf("FROM %s\nLABEL %s=%s %s=\"\"\n", id, quoteLabel(LabelKind), quoteLabel("building"), quoteLabel(LabelDigest))
}

// withLabels appends one LABEL instruction with labels, sorted, to a
// Dockerfile; it applies to the final stage.
func withLabels(dockerfile []byte, labels map[string]string) []byte {
	if len(labels) == 0 {
		return dockerfile
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := append([]byte(nil), dockerfile...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, "LABEL"...)
	for _, k := range keys {
		out = append(out, ' ')
		out = append(out, quoteLabel(k)...)
		out = append(out, '=')
		out = append(out, quoteLabel(labels[k])...)
	}
	return append(out, '\n')
}

// quoteLabel double-quotes s for a Dockerfile, where only the quote and the
// escape character need escaping; line breaks cannot be written at all.
func quoteLabel(s string) string {
	s = strings.NewReplacer("\\", "\\\\", `"`, `\"`, "\n", " ", "\r", " ").Replace(s)
	return `"` + s + `"`
}
