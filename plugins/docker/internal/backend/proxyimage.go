package backend

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
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

// runningPath names the file to read the proxy binary bin from: the
// kernel's handle on the running file when bin is this executable, so the
// image holds the bytes that run here even when the file at bin has been
// replaced since (a re-install during a start).
func runningPath(bin string) string {
	if self, err := os.Executable(); err == nil && self == bin {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			return "/proc/self/exe"
		}
	}
	return bin
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
	src := runningPath(bin)
	id, err := binaryID(src)
	if err != nil {
		return imageRef{}, err
	}
	roots, rootsKey, err := b.roots.get()
	if err != nil {
		return imageRef{}, err
	}
	key := proxyImageKey(id+rootsKey, labels)
	if ref, ok, err := cachedImageOfKind(ctx, c, KindProxy, key); err != nil {
		return imageRef{}, err
	} else if ok {
		progress(sdk.Progress{Stage: StageEgress, Message: "using cached egress proxy image " + ref.Name, ID: ref.ID})
		return ref, nil
	}
	tag := proxyRepo + ":" + key[:12]
	progress(sdk.Progress{Stage: StageEgress, Message: "making egress proxy image " + tag + " from " + bin})
	data, err := os.ReadFile(src)
	if err != nil {
		return imageRef{}, fmt.Errorf("read the egress proxy: %w", err)
	}
	if again, err := binaryID(src); err != nil || again != id {
		return imageRef{}, fmt.Errorf("the egress proxy %s changed while its image was made; start again", bin)
	}
	rootfs, err := proxyRootfs(data, roots)
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

// binaryID names the content of the executable at path without reading
// all of it: its Go build ID, whose last part is the linker's hash of the
// output, with its size. An executable without one (not built by the Go
// toolchain, or with -buildid=) is hashed whole. A launch with egress
// makes this key every time, and hashing the whole plugin took up to
// 190 ms of it on a busy machine.
func binaryID(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("read the egress proxy: %w", err)
	}
	defer f.Close()
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("read the egress proxy: %w", err)
	}
	if sec := f.Section(".note.go.buildid"); sec != nil {
		if d, err := sec.Data(); err == nil && len(d) > 16 {
			namesz, descsz := binary.LittleEndian.Uint32(d[0:4]), binary.LittleEndian.Uint32(d[4:8])
			if namesz == 4 && string(d[12:16]) == "Go\x00\x00" && int(descsz) <= len(d)-16 && descsz > 0 {
				return fmt.Sprintf("go-buildid:%s:%d", d[16:16+descsz], st.Size()), nil
			}
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the egress proxy: %w", err)
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

func proxyImageKey(binaryID string, labels map[string]string) string {
	return keyOf(binaryID, labels)
}

// keyOf is the hex sha256 of seed and m's pairs in key order: a name for
// what a set of settings makes, the same in every process.
func keyOf(seed string, m map[string]string) string {
	h := sha256.New()
	h.Write([]byte(seed))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		js, _ := json.Marshal([2]string{k, m[k]})
		h.Write(js)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// proxyRootfs is the proxy image's whole filesystem: the binary, the two
// mount points its rules and its event log appear at, and the host's roots
// (when it has them) where Go's crypto/x509 looks first on Linux.
func proxyRootfs(binary, roots []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	for _, d := range []string{"etc/", guestRulesDir[1:] + "/", "var/", "var/log/", filepathDir(guestEgressLog)[1:] + "/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	if roots != nil {
		for _, d := range []string{"etc/ssl/", "etc/ssl/certs/"} {
			if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: proxyRootsPath[1:], Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(roots)), ModTime: mtime}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(roots); err != nil {
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

// proxyRootsPath is where the proxy image keeps the host's trusted roots:
// the first file Go's crypto/x509 reads on Linux, so the proxy verifies the
// upstreams of the hosts whose TLS it terminates (an image FROM scratch has
// no roots of its own).
const proxyRootsPath = "/etc/ssl/certs/ca-certificates.crt"

// hostRoots reads the host's trusted roots as Go itself would find them:
// SSL_CERT_FILE, else the first of the usual bundles (imageRoots, the same
// list the bottle's own roots are looked up by). nil when the host has none:
// the proxy then verifies no upstream it terminates, and says so in its 502.
func hostRoots() ([]byte, error) {
	paths := imageRoots
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		paths = append([]string{f}, imageRoots...)
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("the host's trusted roots: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxRootsBundle+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the host's trusted roots %s: %w", p, err)
		}
		if len(data) > maxRootsBundle {
			return nil, fmt.Errorf("the host's trusted roots %s: more than %d bytes", p, maxRootsBundle)
		}
		if len(data) > 0 {
			return data, nil
		}
	}
	return nil, nil
}

// rootsMemo keeps the host's roots between launches of one plugin process:
// every egress start makes the proxy image's key, and would otherwise read
// and hash the whole bundle each time. The bundle is read again when any of
// the files hostRoots looks at changes its inode, size or modification time.
type rootsMemo struct {
	mu    sync.Mutex
	stamp string
	data  []byte
	id    string
}

// get returns the host's roots and their rootsID.
func (m *rootsMemo) get() ([]byte, string, error) {
	stamp := rootsStamp()
	m.mu.Lock()
	defer m.mu.Unlock()
	if stamp != "" && stamp == m.stamp {
		return m.data, m.id, nil
	}
	data, err := hostRoots()
	if err != nil {
		return nil, "", err
	}
	m.stamp, m.data, m.id = stamp, data, rootsID(data)
	return m.data, m.id, nil
}

// rootsStamp names the state of every file hostRoots may read; "" when
// there is none (nothing to keep).
func rootsStamp() string {
	var b strings.Builder
	for _, p := range append([]string{os.Getenv("SSL_CERT_FILE")}, imageRoots...) {
		if p == "" {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		ino := uint64(0)
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			ino = sys.Ino
		}
		fmt.Fprintf(&b, "%s:%d:%d:%d;", p, ino, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

// rootsID is what the roots add to the proxy image's key, so that an update
// of the host's roots makes a new image (and so a new shared proxy).
func rootsID(roots []byte) string {
	if roots == nil {
		return ""
	}
	sum := sha256.Sum256(roots)
	return ":roots:" + hex.EncodeToString(sum[:])
}
