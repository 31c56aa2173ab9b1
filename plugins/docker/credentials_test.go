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
	bin, err := testenv.TLSProbe()
	if err != nil {
		t.Fatal(err)
	}
	probe := string(bin)
	hosts := []string{"api.bb.test", "plain.bb.test", "tunnel.bb.test", "rules.bb.test"}
	caPEM, certPEM, keyPEM, err := testenv.TestCA(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	// The upstream: HTTPS on 443, plain HTTP on 80, under every name.
	name := "bbt-" + e.label
	if _, err := e.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: map[string]string{testenv.Label: e.label}}); err != nil {
		t.Fatalf("create test network: %v", err)
	}
	upImage := testenv.Busybox{Files: map[string]string{"rootfs/bin/tlsprobe": probe, "rootfs/certs/cert.pem": string(certPEM), "rootfs/certs/key.pem": string(keyPEM)},
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
