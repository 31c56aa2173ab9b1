package backend

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"

	"github.com/bot-bottle/bot-bottle/plugins/internal/enginestream"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Commit snapshots the bottle's container to bot-bottle/<identity>:<UTC
// time>.
//
// The engine's own commit copies the container's environment into the image
// (in Config and in ContainerConfig, whatever config the request gives), and
// the container's environment holds the passed-through secrets. So the raw
// commit is only a way to get the container's layer: the snapshot is then
// loaded as a new image over the same layers with a config of our own, the
// base image's, and the raw commit is removed.
func (b *Backend) Commit(ctx context.Context, h sdk.Handle, _ string) (sdk.CommitResult, error) {
	res, err := b.commit(ctx, h)
	if err != nil {
		return res, finish(fmt.Errorf("commit %s: %w", h.Identity, err))
	}
	return res, nil
}

func (b *Backend) commit(ctx context.Context, h sdk.Handle) (sdk.CommitResult, error) {
	hd, err := decodeHandle(h)
	if err != nil {
		return sdk.CommitResult{}, err
	}
	if err := checkIdentity(h.Identity); err != nil {
		return sdk.CommitResult{}, err
	}
	c, err := b.engine(ctx)
	if err != nil {
		return sdk.CommitResult{}, err
	}
	insp, err := c.ContainerInspect(ctx, hd.Container)
	if err != nil {
		return sdk.CommitResult{}, engineErr(c, "inspect container "+hd.Name, err)
	}
	base, err := c.ImageInspect(ctx, insp.Image)
	if err != nil {
		return sdk.CommitResult{}, engineErr(c, "inspect base image "+shortID(insp.Image), err)
	}
	agent := hd.Agent
	if agent == "" && insp.Config != nil {
		agent = insp.Config.Labels[sdk.LabelAgent]
	}

	tmpLabels := map[string]string{}
	for k, v := range hd.Labels {
		tmpLabels[k] = v
	}
	tmpLabels[sdk.LabelIdentity] = h.Identity
	tmpLabels[LabelKind] = KindCommitTmp
	raw, err := c.ContainerCommit(ctx, hd.Container, container.CommitOptions{
		Pause:   true,
		Comment: "bot-bottle: raw commit, replaced by a snapshot with a clean config",
		Config:  &container.Config{Labels: tmpLabels},
	})
	if err != nil {
		return sdk.CommitResult{}, engineErr(c, "commit container "+hd.Name, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := c.ImageRemove(rctx, raw.ID, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !isNotFound(err) {
			b.log.Warn("could not remove the raw commit; stop the bottle to retry", "identity", h.Identity, "image", shortID(raw.ID), "error", err)
		}
	}()
	rawInsp, err := c.ImageInspect(ctx, raw.ID)
	if err != nil {
		return sdk.CommitResult{}, engineErr(c, "inspect raw commit", err)
	}

	ref := "bot-bottle/" + h.Identity + ":" + time.Now().UTC().Format("20060102T150405Z")
	labels := map[string]string{}
	if base.Config != nil {
		for k, v := range base.Config.Labels {
			labels[k] = v
		}
	}
	for _, k := range []string{LabelDigest, LabelKind, LabelLaunch, LabelImage, sdk.LabelManaged, sdk.LabelIdentity, sdk.LabelAgent} {
		delete(labels, k)
	}
	for k, v := range hd.Labels {
		labels[k] = v
	}
	labels[sdk.LabelIdentity] = h.Identity
	labels[sdk.LabelAgent] = agent
	labels[LabelKind] = KindSnapshot
	// The snapshot belongs to its bottle in this home: List reports it and
	// a Stop that removes the bottle for good removes it.
	labels[sdk.LabelManaged] = "true"
	if home := sdk.HomeID(); home != "" {
		labels[sdk.LabelHome] = home
	}

	var cfg dockerspec.DockerOCIImageConfig
	if base.Config != nil {
		cfg = *base.Config
	}
	cfg.Labels = labels
	if err := loadWithConfig(ctx, c, ref, rawInsp, cfg); err != nil {
		return sdk.CommitResult{}, err
	}
	snap, err := c.ImageInspect(ctx, ref)
	if err != nil {
		return sdk.CommitResult{}, engineErr(c, "inspect snapshot "+ref, err)
	}
	b.log.Info("committed bottle", "identity", h.Identity, "image", ref, "id", shortID(snap.ID))
	return sdk.CommitResult{
		Image: ref,
		Notes: []string{"image config restored from base image " + shortID(base.ID) + ": no passed-through environment value is in it"},
	}, nil
}

// imageConfigJSON is the image configuration document the engine stores.
type imageConfigJSON struct {
	Architecture string                          `json:"architecture"`
	Variant      string                          `json:"variant,omitempty"`
	OS           string                          `json:"os"`
	Created      time.Time                       `json:"created"`
	Author       string                          `json:"author,omitempty"`
	Config       dockerspec.DockerOCIImageConfig `json:"config"`
	RootFS       imageRootFS                     `json:"rootfs"`
}

type imageRootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// loadWithConfig creates image ref over the layers of layersOf with config
// cfg. It loads an archive that holds only the config and the manifest: the
// engine skips layers it already has, and it has all of them.
func loadWithConfig(ctx context.Context, c *client.Client, ref string, layersOf image.InspectResponse, cfg dockerspec.DockerOCIImageConfig) error {
	doc, err := json.Marshal(imageConfigJSON{
		Architecture: layersOf.Architecture,
		Variant:      layersOf.Variant,
		OS:           layersOf.Os,
		Created:      time.Now().UTC(),
		Author:       "bot-bottle",
		Config:       cfg,
		RootFS:       imageRootFS{Type: "layers", DiffIDs: layersOf.RootFS.Layers},
	})
	if err != nil {
		return fmt.Errorf("encode snapshot config: %w", err)
	}
	sum := sha256.Sum256(doc)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	layers := make([]string, len(layersOf.RootFS.Layers))
	for i := range layers {
		layers[i] = fmt.Sprintf("layer%d/layer.tar", i)
	}
	manifest, err := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{ref}, "Layers": layers}})
	if err != nil {
		return fmt.Errorf("encode snapshot manifest: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{{cfgName, doc}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Now()}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	resp, err := c.ImageLoad(ctx, &buf, client.ImageLoadWithQuiet(true))
	if err != nil {
		return engineErr(c, "create snapshot "+ref, err)
	}
	defer resp.Body.Close()
	loaded := false
	err = enginestream.Read(resp.Body, func(m enginestream.Message) {
		if strings.Contains(m.Stream, ref) {
			loaded = true
		}
	})
	if err != nil {
		return fmt.Errorf("create snapshot %s: %w", ref, err)
	}
	if !loaded {
		return fmt.Errorf("create snapshot %s: the engine did not confirm the load", ref)
	}
	return nil
}
