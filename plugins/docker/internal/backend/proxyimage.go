package backend

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/proxycmd"
	"github.com/bot-bottle/bot-bottle/plugins/internal/enginestream"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// ProxyBinary is the egress proxy's executable name in its image. The
// executable is this plugin's own (static, built with CGO_ENABLED=0), run
// with its hidden subcommand proxycmd.Command: an installed plugin carries
// its proxy.
const ProxyBinary = "bot-bottle-egress-proxy"

// proxyRepo is the repository of the proxy images this plugin makes.
const proxyRepo = "bot-bottle-egress-proxy"

// locateProxy finds the plugin's own executable and checks that it can run
// in an image that holds nothing else.
func locateProxy() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("the egress proxy is this plugin's own executable, which cannot be found: %w", err)
	}
	return exe, checkStatic(exe)
}

// checkStatic refuses a proxy binary that needs a dynamic loader or is not
// a Linux executable at all: its image has nothing but the binary.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("the egress proxy %s is not a Linux executable (build the plugin with GOOS=linux): %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("the egress proxy %s (this plugin's own executable) is dynamically linked; its image holds nothing else: build the plugin with CGO_ENABLED=0 (make build)", p)
		}
	}
	return nil
}

// proxyImage returns the image that runs the proxy binary bin, making it
// from the binary alone when no image of the same content exists. The
// content key covers the binary and the labels, so that images made with
// different labels (test runs) never share one that another's cleanup
// removes.
func (b *Backend) proxyImage(ctx context.Context, c *client.Client, bin string, labels map[string]string, progress func(sdk.Progress)) (imageRef, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return imageRef{}, fmt.Errorf("read the egress proxy: %w", err)
	}
	key := proxyImageKey(data, labels)
	if ref, ok, err := cachedImageOfKind(ctx, c, KindProxy, key); err != nil {
		return imageRef{}, err
	} else if ok {
		progress(sdk.Progress{Stage: StageEgress, Message: "using cached egress proxy image " + ref.Name, ID: ref.ID})
		return ref, nil
	}
	tag := proxyRepo + ":" + key[:12]
	progress(sdk.Progress{Stage: StageEgress, Message: "making egress proxy image " + tag + " from " + bin})
	rootfs, err := proxyRootfs(data)
	if err != nil {
		return imageRef{}, err
	}
	imgLabels := map[string]string{}
	for k, v := range labels {
		imgLabels[k] = v
	}
	imgLabels[sdk.LabelManaged] = "true"
	imgLabels[LabelKind] = KindProxy
	imgLabels[LabelDigest] = key
	if home := sdk.HomeID(); home != "" {
		imgLabels[sdk.LabelHome] = home
	}
	// An import makes the image from the tar in one step: no builder, no
	// intermediate container, nothing to pull.
	changes := []string{
		`ENTRYPOINT ["/` + ProxyBinary + `", "` + proxycmd.Command + `"]`,
		"USER " + nobody,
		strings.TrimSuffix(string(withLabels(nil, imgLabels)), "\n"),
	}
	rc, err := c.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(rootfs), SourceName: "-"}, tag, image.ImportOptions{Changes: changes})
	if err != nil {
		return imageRef{}, engineErr(c, "make egress proxy image", err)
	}
	defer rc.Close()
	if err := enginestream.Read(rc, func(enginestream.Message) {}); err != nil {
		return imageRef{}, fmt.Errorf("make egress proxy image: %w", err)
	}
	ref, err := inspectRef(ctx, c, tag)
	if err != nil {
		return ref, err
	}
	progress(sdk.Progress{Stage: StageEgress, Message: "made egress proxy image " + tag, ID: ref.ID})
	return ref, nil
}

func proxyImageKey(binary []byte, labels map[string]string) string {
	h := sha256.New()
	h.Write(binary)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		js, _ := json.Marshal([2]string{k, labels[k]})
		h.Write(js)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// proxyRootfs is the proxy image's whole filesystem: the binary and the two
// mount points its rules and its event log appear at.
func proxyRootfs(binary []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	for _, d := range []string{"etc/", guestRulesDir[1:] + "/", "var/", "var/log/", filepathDir(guestEgressLog)[1:] + "/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: ProxyBinary, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(binary)), ModTime: mtime}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func filepathDir(p string) string { return p[:strings.LastIndexByte(p, '/')] }
