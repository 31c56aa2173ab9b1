package backend

// Credentials: the agent holds a placeholder, the home's shared proxy the
// value. At launch the plugin makes the bottle's own CA (egress.NewCA) and
// hands its key and the credentials' values to the proxy in `add`'s input,
// which travels over the exec's stdin and the proxy's control socket only:
// never in a container's config, a command line or a log. The proxy
// terminates TLS for the credentials' hosts (and hosts of rules about
// requests) with leaves of that CA; the bottle trusts it through a bundle
// of the image's own roots plus the CA, in a directory of the plugin's own
// mounted read-only into the agent's container (caFiles), and the usual
// variables. A resume makes a new CA.

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"

	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/proxycmd"
	"github.com/bot-bottle/bot-bottle/plugins/docker/internal/settings"
	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// Where the bottle finds its CA: the certificate alone and the bundle of
// the image's roots plus it.
const (
	guestCADir    = "/run/bot-bottle"
	GuestCACert   = guestCADir + "/ca.pem"
	GuestCABundle = guestCADir + "/ca-bundle.pem"
	// maxRootsBundle bounds the image's roots read out of it.
	maxRootsBundle = 4 << 20
)

// imageRoots are where images keep their trusted roots (Debian, Ubuntu and
// Alpine; Fedora and RHEL; Alpine's and BSDs' other name), first found wins.
var imageRoots = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"}

// caEnvVars are what clients read a trust store from, each with the
// bottle's file for it: OpenSSL and Go (SSL_CERT_FILE), curl, Python's
// requests read a whole bundle; Node adds NODE_EXTRA_CA_CERTS to its own
// roots.
var caEnvVars = []struct{ name, path string }{
	{"SSL_CERT_FILE", GuestCABundle},
	{"CURL_CA_BUNDLE", GuestCABundle},
	{"REQUESTS_CA_BUNDLE", GuestCABundle},
	{"NODE_EXTRA_CA_CERTS", GuestCACert},
}

func isCAEnv(name string) bool {
	for _, v := range caEnvVars {
		if v.name == name {
			return true
		}
	}
	return false
}

// caEnv points the agent's clients at the bottle's CA; a passed-through
// value of one of these never overrides it.
func caEnv(env []string) []string {
	out := env[:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !isCAEnv(k) {
			out = append(out, kv)
		}
	}
	for _, v := range caEnvVars {
		out = append(out, v.name+"="+v.path)
	}
	return out
}

// checkCredentials refuses a spec whose credentials cannot be injected: a
// credential without its value, or without egress (no proxy to hold it).
// Its errors name credentials, never values.
func checkCredentials(spec sdk.Spec) error {
	if len(spec.Agent.Credentials) == 0 {
		return nil
	}
	if len(spec.Egress) == 0 {
		return errors.New("credentials need an egress allowlist: only the egress proxy can put them on the wire")
	}
	for _, c := range spec.Agent.Credentials {
		if spec.Credentials[c.Name] == "" {
			return fmt.Errorf("credential %s has no value in the spec", c.Name)
		}
		if !sdk.IsPlaceholder(c.Placeholder) {
			return fmt.Errorf("credential %s: placeholder is not of the shape sdk.NewPlaceholder makes", c.Name)
		}
	}
	return nil
}

// addInput is the proxy's `add` input for the bottle: its rules, a new CA
// and its credentials. It returns the CA's certificate for the bottle.
func addInput(spec sdk.Spec, set settings.Settings) ([]byte, []byte, error) {
	rules, err := egress.NewRulesFile(spec.Identity, spec.Egress)
	if err != nil {
		return nil, nil, err
	}
	ca, err := egress.NewCA(spec.Identity)
	if err != nil {
		return nil, nil, fmt.Errorf("the bottle's CA: %w", err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return nil, nil, fmt.Errorf("the bottle's CA: %w", err)
	}
	in := proxycmd.AddInput{RulesFile: rules,
		CACert: string(ca.CertPEM()), CAKey: string(key)}
	for _, c := range spec.Agent.Credentials {
		in.Credentials = append(in.Credentials, proxycmd.AddCredential{Name: c.Name, Hosts: c.Hosts, Header: c.Header,
			Prefix: c.Prefix, Placeholder: c.Placeholder, Value: spec.Credentials[c.Name]})
	}
	if set.TestUpstreamCA != "" {
		pem, err := os.ReadFile(set.TestUpstreamCA)
		if err != nil {
			return nil, nil, fmt.Errorf("docker plugin config: test_upstream_ca: %w", err)
		}
		in.UpstreamRoots = string(pem)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, nil, fmt.Errorf("egress proxy input: %w", err)
	}
	return b, ca.CertPEM(), nil
}

// caFiles are a bottle's CA files on the host, in a directory of the
// plugin's own (one per launch), each mounted read-only at its place in
// the agent's container: files, not their directory, for other mounts
// (the queue's) go under guestCADir, whose mount points the engine must
// be able to make there. A mount costs the launch nothing but the
// writes; copying the files into the created container cost two to four
// archive calls, each of which has the engine mount and unmount the
// container's filesystem (130–400 ms of a start on a busy machine). It also
// keeps them out of the bottle's snapshots: a commit takes no mount.
type caFiles struct{ dir string }

const (
	caSubdir    = "ca"
	rootsSubdir = "roots"
)

// caFilesFor is where the launch launchID of identity keeps its CA files.
func caFilesFor(identity, launchID string) (caFiles, error) {
	dir, err := privateDir()
	if err != nil {
		return caFiles{}, fmt.Errorf("the bottle's CA files: %w", err)
	}
	return caFiles{dir: filepath.Join(dir, caSubdir, identity+"."+launchID)}, nil
}

// write makes the directory and its certificate, and the bundle when the
// image's roots are known (known: roots may be nil, an image with none).
func (f caFiles) write(caPEM, roots []byte, known bool) error {
	if err := os.MkdirAll(filepath.Dir(f.dir), 0o700); err != nil {
		return fmt.Errorf("the bottle's CA files: %w", err)
	}
	// World-readable inside: the agent's user reads them through the
	// mount, whatever its uid; the parents stay private on the host.
	if err := os.Mkdir(f.dir, 0o755); err != nil {
		return fmt.Errorf("the bottle's CA files: %w", err)
	}
	if err := os.Chmod(f.dir, 0o755); err != nil {
		return fmt.Errorf("the bottle's CA files: %w", err)
	}
	if err := writeFile(filepath.Join(f.dir, path.Base(GuestCACert)), caPEM, 0o644); err != nil {
		return fmt.Errorf("the bottle's CA files: %w", err)
	}
	if known {
		return f.writeBundle(caPEM, roots)
	}
	// The mount's source must be there at create; the bundle replaces it
	// before the container starts, which is when the engine binds it.
	if err := writeFile(filepath.Join(f.dir, path.Base(GuestCABundle)), nil, 0o644); err != nil {
		return fmt.Errorf("the bottle's CA bundle: %w", err)
	}
	return nil
}

// writeBundle writes the bundle: the image's roots plus the bottle's CA.
func (f caFiles) writeBundle(caPEM, roots []byte) error {
	bundle := append(append([]byte(nil), roots...), '\n')
	bundle = append(bundle, caPEM...)
	if err := writeFile(filepath.Join(f.dir, path.Base(GuestCABundle)), bundle, 0o644); err != nil {
		return fmt.Errorf("the bottle's CA bundle: %w", err)
	}
	return nil
}

func (f caFiles) mounts() []mount.Mount {
	var ms []mount.Mount
	for _, g := range []string{GuestCACert, GuestCABundle} {
		ms = append(ms, mount.Mount{Type: mount.TypeBind, Source: filepath.Join(f.dir, path.Base(g)), Target: g, ReadOnly: true})
	}
	return ms
}

// writeFile writes data to name whole or not at all, with mode whatever
// the umask: a reader never sees half of it.
func writeFile(name string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// removeCAFiles removes the CA files of identity's launches (every one
// when launchID is empty). The engine's mount of a removed directory in a
// container that still runs would lose them, so only a launch that failed
// or a bottle whose containers are gone calls it.
func removeCAFiles(identity, launchID string) error {
	dir, err := privateDir()
	if err != nil {
		return fmt.Errorf("the bottle's CA files: %w", err)
	}
	pattern := identity + ".*"
	if launchID != "" {
		pattern = identity + "." + launchID
	}
	ms, err := filepath.Glob(filepath.Join(dir, caSubdir, pattern))
	if err != nil {
		return fmt.Errorf("the bottle's CA files: %w", err)
	}
	var errs []error
	for _, m := range ms {
		if err := os.RemoveAll(m); err != nil {
			errs = append(errs, fmt.Errorf("the bottle's CA files: %w", err))
		}
	}
	return errors.Join(errs...)
}

// cachedRoots are the trusted roots of the image imageID as an earlier
// launch read them (ok false: never read). An image ID is its content's
// hash, so its roots never change; reading them out of a container costs
// an archive call per path tried (each one a mount of the container's
// filesystem by the engine), and every bottle of an image has the same.
func cachedRoots(imageID string) (roots []byte, ok bool) {
	name, err := rootsCacheFile(imageID)
	if err != nil {
		return nil, false
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRootsBundle+1))
	if err != nil || len(data) > maxRootsBundle {
		return nil, false
	}
	if len(data) == 0 {
		return nil, true // the image has none
	}
	return data, true
}

// storeRoots remembers the image's roots for its next launches; a cache
// that cannot be written only costs them the read.
func storeRoots(imageID string, roots []byte) {
	name, err := rootsCacheFile(imageID)
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return
	}
	_ = writeFile(name, roots, 0o600)
}

func rootsCacheFile(imageID string) (string, error) {
	hexID, ok := strings.CutPrefix(imageID, "sha256:")
	if !ok || !validContainerID(hexID) {
		return "", fmt.Errorf("image ID %q is not a sha256", imageID)
	}
	dir, err := privateDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, rootsSubdir, hexID+".pem"), nil
}

// readImageRoots copies the image's trusted roots out of the created
// container, following a symbolic link or two; none is no roots.
func readImageRoots(ctx context.Context, c *client.Client, containerID string) ([]byte, error) {
	for _, p := range imageRoots {
		for hop := 0; hop < 4; hop++ {
			rc, _, err := c.CopyFromContainer(ctx, containerID, p)
			if err != nil {
				break // not in this image
			}
			tr := tar.NewReader(rc)
			hdr, err := tr.Next()
			if err != nil {
				rc.Close()
				break
			}
			switch hdr.Typeflag {
			case tar.TypeSymlink:
				rc.Close()
				if path.IsAbs(hdr.Linkname) {
					p = hdr.Linkname
				} else {
					p = path.Join(path.Dir(p), hdr.Linkname)
				}
				continue
			case tar.TypeReg:
				data, err := io.ReadAll(io.LimitReader(tr, maxRootsBundle+1))
				rc.Close()
				if err != nil {
					return nil, fmt.Errorf("read the image's roots %s: %w", p, err)
				}
				if len(data) > maxRootsBundle {
					return nil, fmt.Errorf("the image's roots %s are larger than %d bytes", p, maxRootsBundle)
				}
				return data, nil
			}
			rc.Close()
			break
		}
	}
	return nil, nil
}

// RevokeCredential has the bottle's proxy stop injecting credential name,
// from its next request.
func (b *Backend) RevokeCredential(ctx context.Context, h sdk.Handle, name string) error {
	return finish(b.revokeCredential(ctx, h, name))
}

func (b *Backend) revokeCredential(ctx context.Context, h sdk.Handle, name string) error {
	hd, err := decodeHandle(h)
	if err != nil {
		return fmt.Errorf("revoke credential: %w", err)
	}
	if err := checkIdentity(h.Identity); err != nil {
		return fmt.Errorf("revoke credential: %w", err)
	}
	if err := sdk.ValidCredentialName(name); err != nil {
		return fmt.Errorf("revoke credential: %w", err)
	}
	if !hd.Shared || hd.Proxy == "" {
		return fmt.Errorf("revoke credential %s of %s: it was launched without credentials: %w", name, h.Identity, sdk.ErrNotFound)
	}
	c, err := b.engine(ctx)
	if err != nil {
		return fmt.Errorf("revoke credential %s of %s: %w", name, h.Identity, err)
	}
	if _, err := controlProxy(ctx, c, hd.Proxy, proxycmd.Request{Op: proxycmd.CmdRevoke, Identity: h.Identity, Credential: name}, ""); err != nil {
		if strings.Contains(err.Error(), proxycmd.ErrNoCredential) {
			return fmt.Errorf("revoke credential %s of %s: none in force by that name: %w", name, h.Identity, sdk.ErrNotFound)
		}
		return fmt.Errorf("revoke credential %s of %s: %w", name, h.Identity, err)
	}
	b.log.Info("credential revoked", "identity", h.Identity, "credential", name)
	return nil
}
