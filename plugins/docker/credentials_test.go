package main_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/bot-bottle/bot-bottle/internal/testenv"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// The credential's value in these tests; the bottle only ever holds its
// placeholder.
const credentialValue = "sk-cred-9f3a2b7c-do-not-leak"

// pemKeyRE finds a PEM private key (the bottle's CA's would be one).
var pemKeyRE = regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/]`)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Issue 24's acceptance on the Docker backend: the bottle holds a
// placeholder; a request with it to the credential's host arrives at the
// upstream (HTTPS, a CA the test made) with the real value; the same
// placeholder toward another host arrives as it is and is audited; a host
// without a credential is a plain tunnel (the bottle sees the upstream's
// own certificate); method/path rules pass, refuse and deny; revoke works
// live; the value is in none of the bottle's env, /proc/*/environ and
// filesystem, the egress log, the plugin's and the proxy's logs, the
// proxy's and the agent's container config, or a committed image.
func TestCredentialInjection(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 6*time.Minute)
	hosts := []string{"api.bb.test", "plain.bb.test", "tunnel.bb.test", "rules.bb.test"}
	up := e.tlsUpstream(ctx, hosts...)
	probe, caPEM, name, caFile := up.probe, up.caPEM, up.network, up.caFile

	// The bottle: the test CA is its image's own roots (so that the tunnel
	// to tunnel.bb.test verifies); the bottle's CA joins them at launch.
	bb := testenv.Busybox{User: "agent", Files: map[string]string{"rootfs/bin/tlsprobe": probe, "rootfs/etc/ssl/certs/ca-certificates.crt": string(caPEM),
		"nonce": e.label + "-cred"}, Lines: []string{"USER root", "RUN chmod 755 /bin/tlsprobe", "USER agent"}}
	dir := bb.Context(t)
	agent := sdk.Agent{Name: "cred", Dockerfile: filepath.Join(dir, "Dockerfile"), ContextDir: dir, Workdir: "/workspace"}
	placeholder := sdk.NewPlaceholder("api")
	agent.Credentials = []sdk.Credential{{Name: "api", EnvName: "API_KEY", Hosts: []string{"api.bb.test"}, Header: "x-api-key", Placeholder: placeholder}}
	id := e.identity("cred")
	spec := e.spec(agent, id, "sleep", "300")
	spec.Detach = true
	spec.Egress = []string{"api.bb.test", "plain.bb.test:80", "tunnel.bb.test", "GET rules.bb.test/allowed/", "!rules.bb.test/allowed/secret"}
	spec.Env = map[string]string{"API_KEY": placeholder}
	spec.Credentials = map[string]string{"api": credentialValue}
	logDir := filepath.Join(t.TempDir(), "egress")
	if err := os.Mkdir(logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	spec.EgressLog = filepath.Join(logDir, id+".jsonl")
	e.configure(map[string]any{"egress_networks": []string{name}, "test_upstream_ca": caFile})
	plan, h, _ := e.launch(ctx, spec)
	if !strings.Contains(preflightValue(plan, "credentials"), "injected by the egress proxy") || !strings.Contains(preflightValue(plan, "tls"), "/run/bot-bottle/ca-bundle.pem") {
		t.Errorf("preflight says nothing of credentials and the bottle's CA: %+v", plan.Preflight)
	}

	get := func(url string, headers ...string) string {
		t.Helper()
		script := `tlsprobe get "$0"`
		for i := range headers {
			script += ` "$` + string(rune('1'+i)) + `"`
		}
		res, err := e.p.be.Exec(ctx, sdk.ExecRequest{Handle: h, Command: append([]string{"sh", "-c", script, url}, headers...)})
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		return string(res.Stdout) + string(res.Stderr)
	}
	// The placeholder as the agent has it in its environment.
	res := e.sh(ctx, h, `printf %s "$API_KEY"`)
	if string(res.Stdout) != placeholder {
		t.Fatalf("API_KEY in the bottle is %q, want the placeholder", res.Stdout)
	}
	// 1. Toward its host: the value arrives, in the header; the bottle's
	// Go client trusts the bottle's CA (the issuer is the bottle's).
	out := get("https://api.bb.test/v1/messages", "x-api-key: "+placeholder)
	if !strings.Contains(out, "status=200") || !strings.Contains(out, "header x-api-key sha256="+sha(credentialValue)) {
		t.Errorf("request to the credential's host:\n%s\nwant the value's sha256 %s", out, sha(credentialValue))
	}
	if !strings.Contains(out, "issuer=") || strings.Contains(out, "issuer="+testenv.TestCAName) {
		t.Errorf("the credential's host was not terminated by the bottle's CA:\n%s", out)
	}
	// 2. Toward other hosts whose traffic the proxy reads: unchanged, and
	// audited as a possible exfiltration.
	out = get("http://plain.bb.test/", "x-api-key: "+placeholder)
	if !strings.Contains(out, "status=200") || !strings.Contains(out, "sha256="+sha(placeholder)) || strings.Contains(out, sha(credentialValue)) {
		t.Errorf("placeholder over plain HTTP to another host:\n%s\nwant it unchanged", out)
	}
	out = get("https://rules.bb.test/allowed/x", "x-api-key: "+placeholder)
	if !strings.Contains(out, "status=200") || !strings.Contains(out, "sha256="+sha(placeholder)) || strings.Contains(out, sha(credentialValue)) {
		t.Errorf("placeholder over TLS to a host terminated for a rule:\n%s\nwant it unchanged", out)
	}
	// 4. A host with no credential and no rule about requests: a tunnel,
	// with the upstream's own certificate.
	out = get("https://tunnel.bb.test/", "x-api-key: "+placeholder)
	if !strings.Contains(out, "status=200") || !strings.Contains(out, "issuer="+testenv.TestCAName) || !strings.Contains(out, sha(placeholder)) {
		t.Errorf("tunnelled host:\n%s\nwant the upstream's own certificate", out)
	}
	// 6. Method/path rules: the allowed path passes (above), another path
	// is refused with the rule named, the deny rule beats the allow.
	out = get("https://rules.bb.test/other")
	if !strings.Contains(out, "status=403") || !strings.Contains(out, "GET rules.bb.test:443/allowed/") {
		t.Errorf("a path no rule allows:\n%s\nwant 403 naming the rule", out)
	}
	out = get("https://rules.bb.test/allowed/secret/x")
	if !strings.Contains(out, "status=403") || !strings.Contains(out, "!rules.bb.test:443/allowed/secret") {
		t.Errorf("a path a deny rule covers:\n%s\nwant 403 naming the deny rule", out)
	}

	// The value is nowhere in the bottle: its env, every process's
	// environment, its whole filesystem (exported by the engine).
	res = e.sh(ctx, h, `env; cat /proc/[0-9]*/environ; ls -la /run/bot-bottle; cat /run/bot-bottle/ca-bundle.pem`)
	if strings.Contains(string(res.Stdout), credentialValue) {
		t.Error("the value is in the bottle's environment")
	}
	for _, want := range []string{"SSL_CERT_FILE=/run/bot-bottle/ca-bundle.pem", "NODE_EXTRA_CA_CERTS=/run/bot-bottle/ca.pem", "REQUESTS_CA_BUNDLE=/run/bot-bottle/ca-bundle.pem", "CURL_CA_BUNDLE=/run/bot-bottle/ca-bundle.pem", "API_KEY=" + placeholder} {
		if !strings.Contains(string(res.Stdout), want) {
			t.Errorf("the bottle's environment lacks %s:\n%s", want, res.Stdout)
		}
	}
	if !strings.Contains(string(res.Stdout), strings.TrimSpace(string(caPEM))) || strings.Count(string(res.Stdout), "BEGIN CERTIFICATE") != 2 {
		t.Errorf("the bundle is not the image's roots plus the bottle's CA:\n%s", res.Stdout)
	}
	rc, err := e.cli.ContainerExport(ctx, "bot-bottle-"+id)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	files := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files++
		if bytes.Contains(data, []byte(credentialValue)) {
			t.Errorf("the bottle's filesystem holds the value in %s", hdr.Name)
		}
		if pemKeyRE.Match(data) {
			t.Errorf("the bottle's filesystem holds a private key in %s", hdr.Name)
		}
	}
	rc.Close()
	if files < 10 {
		t.Errorf("exported only %d files from the bottle", files)
	}

	// 3. Revoke, live: the next request goes out with the placeholder.
	if err := e.p.be.RevokeCredential(ctx, h, "nope"); !errors.Is(err, sdk.ErrNotFound) || strings.Contains(err.Error(), "\n") {
		t.Errorf("revoke of an unknown credential: %v, want a one-line ErrNotFound", err)
	}
	if err := e.p.be.RevokeCredential(ctx, h, "api"); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	out = get("https://api.bb.test/after-revoke", "x-api-key: "+placeholder)
	if !strings.Contains(out, "status=200") || !strings.Contains(out, "sha256="+sha(placeholder)) || strings.Contains(out, sha(credentialValue)) {
		t.Errorf("after revoke:\n%s\nwant the placeholder, not the value", out)
	}

	// The audit: the injection, the exfiltration attempts, the revoke.
	raw, err := os.ReadFile(spec.EgressLog)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(credentialValue)) {
		t.Error("the egress log holds the value")
	}
	kinds := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var ev sdk.EgressEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("egress log line %q: %v", line, err)
		}
		if ev.Kind != "" {
			kinds[ev.Kind] = append(kinds[ev.Kind], ev.Credential+"@"+ev.Host)
		}
	}
	// One request carried it before the revoke; none after.
	if got := kinds["inject"]; len(got) != 1 || got[0] != "api@api.bb.test" {
		t.Errorf("inject events %v, want the one before the revoke", got)
	}
	ex := strings.Join(kinds["exfiltration"], " ")
	if !strings.Contains(ex, "api@plain.bb.test") || !strings.Contains(ex, "api@rules.bb.test") {
		t.Errorf("exfiltration events %v, want plain.bb.test and rules.bb.test", kinds["exfiltration"])
	}
	if got := kinds["revoke"]; len(got) != 1 || !strings.HasPrefix(got[0], "api@") {
		t.Errorf("revoke events %v", got)
	}

	// 5. Nor in the proxy's container config, its logs, the agent's
	// container config, the plugin's logs or a committed image.
	proxyName := handleProxy(t, h)
	_, praw, err := e.cli.ContainerInspectWithRaw(ctx, proxyName, false)
	if err != nil {
		t.Fatal(err)
	}
	_, araw, err := e.cli.ContainerInspectWithRaw(ctx, "bot-bottle-"+id, false)
	if err != nil {
		t.Fatal(err)
	}
	plogs, err := exec.CommandContext(ctx, "docker", "logs", proxyName).CombinedOutput()
	if err != nil {
		t.Fatalf("proxy logs: %v", err)
	}
	for what, b := range map[string][]byte{"the proxy's container config": praw, "the agent's container config": araw, "the proxy's logs": plogs, "the plugin's logs": []byte(e.p.logs.String())} {
		if bytes.Contains(b, []byte(credentialValue)) {
			t.Errorf("%s hold the value", what)
		}
		if pemKeyRE.Match(b) {
			t.Errorf("%s hold a private key", what)
		}
	}
	pinsp, err := e.cli.ContainerInspect(ctx, proxyName)
	if err != nil {
		t.Fatal(err)
	}
	if found, err := imageContains(ctx, e.cli, pinsp.Image, credentialValue); err != nil || found {
		t.Errorf("the proxy's image holds the value: %v %v", found, err)
	}
	cr, err := e.p.be.Commit(ctx, h, t.TempDir())
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	t.Cleanup(func() { _ = testenv.RemoveLabelled(context.Background(), e.cli, sdk.LabelIdentity, id) })
	if found, err := imageContains(ctx, e.cli, cr.Image, credentialValue); err != nil || found {
		t.Errorf("the committed image holds the value: %v %v", found, err)
	}
	firstCA := e.sh(ctx, h, `cat /run/bot-bottle/ca.pem`).Stdout

	// A resume (from the snapshot) is a new launch: a new CA, a new
	// placeholder, and a bundle of the image's roots plus the new CA only.
	e.stop(ctx, sdk.StopRequest{Handle: &h, Identity: id})
	spec.Resume, spec.CommittedImage = true, cr.Image
	placeholder2 := sdk.NewPlaceholder("api")
	spec.Agent.Credentials[0].Placeholder = placeholder2
	spec.Env = map[string]string{"API_KEY": placeholder2}
	_, h, _ = e.launch(ctx, spec)
	res = e.sh(ctx, h, `cat /run/bot-bottle/ca.pem; echo ===; cat /run/bot-bottle/ca-bundle.pem`)
	ca2, bundle2, _ := strings.Cut(string(res.Stdout), "===\n")
	if ca2 == "" || ca2 == string(firstCA) || strings.Count(bundle2, "BEGIN CERTIFICATE") != 2 || !strings.Contains(bundle2, ca2) {
		t.Errorf("after resume: the CA is the same (%v) or the bundle is not the roots plus the new CA:\n%s", ca2 == string(firstCA), res.Stdout)
	}
	out = get("https://api.bb.test/resumed", "x-api-key: "+placeholder2)
	if !strings.Contains(out, "sha256="+sha(credentialValue)) {
		t.Errorf("after resume, the credential is not injected:\n%s", out)
	}
	e.stop(ctx, sdk.StopRequest{Handle: &h, Identity: id, RemoveSnapshots: true})
}

// tlsUpstream is a credential test's upstream: tlsprobe serving HTTPS (a
// certificate of a CA the test made) on 443 and plain HTTP on 80 under
// every name of hosts, on a network of its own.
type tlsUpstream struct {
	probe   string // the tlsprobe binary
	caPEM   []byte
	caFile  string // caPEM, for the plugin's test_upstream_ca
	network string
}

func (e *env) tlsUpstream(ctx context.Context, hosts ...string) tlsUpstream {
	t := e.t
	t.Helper()
	bin, err := testenv.TLSProbe()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, certPEM, keyPEM, err := testenv.TestCA(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	name := "bbt-" + e.label
	if _, err := e.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: map[string]string{testenv.Label: e.label}}); err != nil {
		t.Fatalf("create test network: %v", err)
	}
	upImage := testenv.Busybox{Files: map[string]string{"rootfs/bin/tlsprobe": string(bin), "rootfs/certs/cert.pem": string(certPEM), "rootfs/certs/key.pem": string(keyPEM)},
		Lines: []string{"RUN chmod 755 /bin/tlsprobe"}}.Image(t, e.cli, e.label)
	up, err := e.cli.ContainerCreate(ctx,
		&container.Config{Image: upImage, Cmd: []string{"/bin/tlsprobe", "serve", "/certs/cert.pem", "/certs/key.pem"}, Labels: map[string]string{testenv.Label: e.label}},
		&container.HostConfig{NetworkMode: container.NetworkMode(name)},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{name: {Aliases: hosts}}}, nil, "")
	if err != nil {
		t.Fatalf("create upstream: %v", err)
	}
	if err := e.cli.ContainerStart(ctx, up.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start upstream: %v", err)
	}
	return tlsUpstream{probe: string(bin), caPEM: caPEM, caFile: caFile, network: name}
}

// A bottle with credentials but no egress has nobody to put them on the
// wire: refused in Prepare, in one line naming no value.
func TestCredentialsNeedEgress(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, time.Minute)
	a := e.agent("noegress")
	a.Credentials = []sdk.Credential{{Name: "api", EnvName: "API_KEY", Hosts: []string{"api.bb.test"}, Header: "x-api-key", Placeholder: sdk.NewPlaceholder("api")}}
	spec := e.spec(a, e.identity("noegress"), "true")
	spec.Credentials = map[string]string{"api": credentialValue}
	_, err := e.p.be.Prepare(ctx, spec)
	if err == nil || !strings.Contains(err.Error(), "credentials need an egress allowlist") || strings.Contains(err.Error(), credentialValue) {
		t.Errorf("prepare: %v", err)
	}
	spec.Egress = []string{"api.bb.test"}
	spec.Credentials = nil
	if _, err := e.p.be.Prepare(ctx, spec); err == nil || !strings.Contains(err.Error(), "credential api has no value") {
		t.Errorf("prepare without the value: %v", err)
	}
}

// probePy is the bottle's Python client: urllib (which reads its roots
// from SSL_CERT_FILE through OpenSSL) or requests (REQUESTS_CA_BUNDLE),
// both through $https_proxy. It prints what tlsprobe get prints.
const probePy = `import sys, urllib.request
mode, url, hdrs = sys.argv[1], sys.argv[2], dict(h.split(": ", 1) for h in sys.argv[3:])
def issuer(sock):
    for rdn in sock.getpeercert().get("issuer", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return "?"
if mode == "requests":
    try:
        import requests
    except ImportError:
        print("requests absent")
        sys.exit(3)
    r = requests.get(url, headers=hdrs, timeout=20, stream=True)
    # The response's socket, before the body is read: urllib3's connection
    # through the CONNECT tunnel (or the proxy's termination of it).
    iss = issuer(r.raw._fp.fp.raw._sock)
    status, body = r.status_code, r.raw.read().decode()
else:
    resp = urllib.request.urlopen(urllib.request.Request(url, headers=hdrs), timeout=20)
    iss = issuer(resp.fp.raw._sock)
    status, body = resp.status, resp.read().decode()
print("status=%d" % status)
print("issuer=" + iss)
sys.stdout.write(body)
`

// probeJS is the bottle's Node client: https.get with Node's default trust
// (its own roots plus NODE_EXTRA_CA_CERTS). Node's https ignores
// HTTPS_PROXY, so the script opens the CONNECT tunnel itself, as the proxy
// agents of Node's agents do.
const probeJS = `const http = require("http"), https = require("https"), tls = require("tls");
const [url, ...hs] = process.argv.slice(2);
const u = new URL(url), proxy = new URL(process.env.HTTPS_PROXY);
const headers = {};
for (const h of hs) { const i = h.indexOf(":"); headers[h.slice(0, i).trim()] = h.slice(i + 1).trim(); }
const fail = (e) => { console.log("error: " + e.message); process.exit(1); };
http.request({ host: proxy.hostname, port: proxy.port, method: "CONNECT", path: u.hostname + ":" + (u.port || 443) })
  .on("connect", (res, socket) => {
    if (res.statusCode !== 200) { console.log("status=" + res.statusCode); process.exit(0); }
    // No agent: the request goes over createConnection, the tunnel.
    https.get(url, { headers, defaultPort: 443, createConnection: () => tls.connect({ socket, servername: u.hostname }) }, (r) => {
      const c = r.socket.getPeerCertificate();
      console.log("status=" + r.statusCode);
      console.log("issuer=" + (c.issuer ? c.issuer.CN : "?"));
      r.setEncoding("utf8");
      r.on("data", (d) => process.stdout.write(d));
    }).on("error", fail);
  }).on("error", fail).end();
`

// curlIssuerRE finds the issuer's common name in curl -v's output.
var curlIssuerRE = regexp.MustCompile(`(?m)^\*\s+issuer: .*CN ?= ?([^;,\n]+)`)

// Issue 24's acceptance 4 with the clients agents use: in one bottle made
// FROM the base image with Debian's curl, python3 and requests and the
// host's node, each client, through the proxy, reaches the credential's
// host trusting the bottle's CA (and the upstream sees the real value),
// and reaches a host with no credential through a plain tunnel, seeing the
// upstream's own certificate. It needs the base image (make base-image),
// apt-get with a bookworm source for curl and python3 (their .debs are
// cached in testenv.DebCache), and node on the PATH that runs on
// bookworm's glibc; a client this machine cannot provide is skipped, a
// broken setup fails.
func TestCredentialClients(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t, 6*time.Minute)
	up := e.tlsUpstream(ctx, "api.bb.test", "tunnel.bb.test")
	// The test CA joins the image's roots the Debian way, so that the
	// tunnel to tunnel.bb.test verifies against the image's own store.
	img, err := testenv.Clients{
		Files: map[string]string{"test-ca.crt": string(up.caPEM), "bin/tlsprobe": up.probe, "probe.py": probePy, "probe.js": probeJS},
		Lines: []string{"COPY test-ca.crt /usr/local/share/ca-certificates/bb-test-upstream.crt",
			"RUN update-ca-certificates >/dev/null",
			"COPY bin/tlsprobe probe.py probe.js /opt/probe/"},
	}.Context(ctx, t, e.cli, e.label)
	if err != nil {
		if os.Getenv("CI") == "true" || !errors.Is(err, testenv.ErrUnavailable) {
			t.Fatalf("the clients' image: %v", err)
		}
		t.Skipf("skipping: the clients' image: %v", err)
	}
	agent := sdk.Agent{Name: "clients", Dockerfile: filepath.Join(img.Dir, "Dockerfile"), ContextDir: img.Dir, Workdir: "/workspace"}
	placeholder := sdk.NewPlaceholder("api")
	agent.Credentials = []sdk.Credential{{Name: "api", EnvName: "API_KEY", Hosts: []string{"api.bb.test"}, Header: "x-api-key", Placeholder: placeholder}}
	id := e.identity("clients")
	spec := e.spec(agent, id, "sleep", "300")
	spec.Detach = true
	spec.Egress = []string{"api.bb.test", "tunnel.bb.test"}
	spec.Env = map[string]string{"API_KEY": placeholder}
	spec.Credentials = map[string]string{"api": credentialValue}
	e.configure(map[string]any{"egress_networks": []string{up.network}, "test_upstream_ca": up.caFile})
	t0 := time.Now()
	_, h, _ := e.launch(ctx, spec)
	t.Logf("launch (the image's build included) took %s", time.Since(t0).Round(time.Millisecond))
	defer e.stop(ctx, sdk.StopRequest{Handle: &h, Identity: id})
	bottleCA := "bot-bottle egress CA for " + id

	run := func(script string, args ...string) (string, int) {
		t.Helper()
		res, err := e.p.be.Exec(ctx, sdk.ExecRequest{Handle: h, Command: append([]string{"bash", "-c", script, "probe"}, args...)})
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		return string(res.Stdout) + string(res.Stderr), res.ExitCode
	}
	// Each client is a script that prints status=, issuer= and the body
	// (what tlsprobe get prints); $1 is the URL, $2 a header.
	type client struct {
		name, needs, script string
		// tunnel is the script toward the tunnelled host, when not script.
		tunnel string
	}
	curl := `out=$(curl -sS -v --max-time 20 -H "$2" -w '\nstatus=%{http_code}\n' "$1" 2>&1); rc=$?; printf '%s\n' "$out"; exit $rc`
	clients := []client{
		{name: "curl (CURL_CA_BUNDLE)", needs: "curl", script: curl},
		{name: "curl (SSL_CERT_FILE only)", needs: "curl", script: `unset CURL_CA_BUNDLE; ` + curl},
		{name: "python3 urllib (SSL_CERT_FILE)", needs: "python3", script: `unset REQUESTS_CA_BUNDLE; python3 /opt/probe/probe.py urllib "$@"`},
		{name: "python3 requests (REQUESTS_CA_BUNDLE)", needs: "python3", script: `python3 /opt/probe/probe.py requests "$@"`},
		// Node's default trust is its own roots plus NODE_EXTRA_CA_CERTS:
		// the test's upstream CA is in neither, so toward the tunnelled host
		// it uses the system's store (the bundle, through SSL_CERT_FILE).
		{name: "node (NODE_EXTRA_CA_CERTS)", needs: "node", script: `node /opt/probe/probe.js "$@"`, tunnel: `node --use-openssl-ca /opt/probe/probe.js "$@"`},
		{name: "go (SSL_CERT_FILE)", script: `/opt/probe/tlsprobe get "$@"`},
	}
	if _, ok := img.Missing["node"]; !ok {
		// The host's node may want a newer glibc than the base image's: a
		// machine that cannot provide it, not a broken setup.
		if out, code := run(`node --version`); code != 0 {
			if !strings.Contains(out, "GLIBC") && !strings.Contains(out, "not found") {
				t.Fatalf("the host's node does not run in the bottle: %s", out)
			}
			img.Missing["node"] = "the host's node does not run on " + testenv.BaseImage + ": " + strings.TrimSpace(out)
		}
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := img.Missing[c.needs]; ok {
				t.Skipf("skipping: %s cannot be provided here: %s", c.needs, why)
			}
			out, _ := run(c.script, "https://api.bb.test/v1/messages", "x-api-key: "+placeholder)
			if strings.HasPrefix(c.needs, "curl") {
				if m := curlIssuerRE.FindStringSubmatch(out); m != nil {
					out += "\nissuer=" + strings.TrimSpace(m[1]) + "\n"
				}
			}
			if !strings.Contains(out, "status=200") || !strings.Contains(out, "header x-api-key sha256="+sha(credentialValue)) || !strings.Contains(out, "issuer="+bottleCA+"\n") {
				t.Errorf("toward the credential's host:\n%s\nwant status 200, the value's sha256 %s and the issuer %q", out, sha(credentialValue), bottleCA)
			}
			script := c.tunnel
			if script == "" {
				script = c.script
			}
			out, _ = run(script, "https://tunnel.bb.test/", "x-api-key: "+placeholder)
			if strings.HasPrefix(c.needs, "curl") {
				if m := curlIssuerRE.FindStringSubmatch(out); m != nil {
					out += "\nissuer=" + strings.TrimSpace(m[1]) + "\n"
				}
			}
			if !strings.Contains(out, "status=200") || !strings.Contains(out, "issuer="+testenv.TestCAName+"\n") || !strings.Contains(out, "sha256="+sha(placeholder)) {
				t.Errorf("toward the tunnelled host:\n%s\nwant status 200, the upstream's own certificate (%q) and the placeholder as sent", out, testenv.TestCAName)
			}
			if strings.Contains(out, credentialValue) {
				t.Errorf("the client saw the value:\n%s", out)
			}
		})
	}
	// The clients do verify: curl trusting the image's roots alone (no
	// bottle CA) refuses the credential's host.
	if _, ok := img.Missing["curl"]; !ok {
		out, code := run(`curl -sS --max-time 20 --cacert /etc/ssl/certs/ca-certificates.crt "$1"`, "https://api.bb.test/")
		if code != 60 || !strings.Contains(out, "certificate") {
			t.Errorf("curl without the bottle's CA: exit %d:\n%s\nwant exit 60, a certificate error", code, out)
		}
	}
}
