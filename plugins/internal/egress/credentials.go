package egress

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	credrule "github.com/bot-bottle/bot-bottle/sdk/credential"
	"github.com/bot-bottle/bot-bottle/sdk/egresslog"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// Credential is a secret the proxy puts on the wire for the bottle, which
// only ever holds Placeholder. On a request toward a host matching Hosts
// whose TLS the proxy terminates (never plain HTTP: see prepare), a Header
// equal to Prefix+Placeholder, or containing Placeholder, is set to
// Prefix+Value.
type Credential struct {
	// Name names it in events, `bot-bottle revoke` and status.
	Name string
	// Hosts are egressrule host[:port] patterns (port 443 by default):
	// the only hosts Value is ever sent to.
	Hosts []string
	// Header is the header it goes in ("x-api-key", "Authorization").
	Header string
	// Prefix goes before the value in the header ("Bearer ").
	Prefix string
	// Placeholder is what the bottle has instead of the value.
	Placeholder string
	// Value is the secret: 8 bytes at least, no control character, no
	// whitespace at either end. It is never written anywhere by the proxy.
	Value string
}

// minPlaceholderLen keeps a placeholder from matching by chance.
const minPlaceholderLen = 16

// maxCredentialLen bounds a placeholder, a value, a prefix and a name.
const maxCredentialLen = 16 << 10

// NewPlaceholder returns a fresh placeholder for the credential name in the
// one shape the core makes them (credrule.NewPlaceholder):
// "bbph-<name>-<32 random hex digits>".
func NewPlaceholder(name string) string { return credrule.NewPlaceholder(name) }

// credential is a Credential as the proxy holds it.
type credential struct {
	Credential
	hosts *egressrule.Rules
}

// credentials are a proxy's credentials and which are revoked. Safe for
// concurrent use.
type credentials struct {
	list []*credential // as configured; never changes

	mu      sync.Mutex
	revoked map[string]bool
	// carriers are the terminated connections that have carried each
	// credential, for Revoke to end: a websocket or a stream the value
	// opened would outlive the revoke otherwise.
	carriers map[*tunnel]map[string]bool
}

// carried notes that conn carried the credentials cs. It reports false if
// one of them was revoked since it was put on the request: the request
// must not go.
func (cs *credentials) carried(conn *tunnel, creds []*credential) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.carriers == nil {
		cs.carriers = map[*tunnel]map[string]bool{}
	}
	names := cs.carriers[conn]
	if names == nil {
		names = map[string]bool{}
		cs.carriers[conn] = names
	}
	for _, c := range creds {
		if cs.revoked[c.Name] {
			return false
		}
		names[c.Name] = true
	}
	return true
}

// forget drops conn, which has ended.
func (cs *credentials) forget(conn *tunnel) {
	if cs == nil {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.carriers, conn)
}

func newCredentials(in []Credential) (*credentials, error) {
	cs := &credentials{revoked: map[string]bool{}}
	seen := map[string]bool{}
	for i, c := range in {
		hosts, err := checkCredential(c)
		if err != nil {
			return nil, fmt.Errorf("credential %d (%.40q): %w", i+1, c.Name, err)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("credential %.40q is given twice", c.Name)
		}
		seen[c.Name] = true
		for _, o := range cs.list {
			if strings.Contains(o.Placeholder, c.Placeholder) || strings.Contains(c.Placeholder, o.Placeholder) {
				return nil, fmt.Errorf("credentials %.40q and %.40q have overlapping placeholders", o.Name, c.Name)
			}
		}
		cs.list = append(cs.list, &credential{Credential: c, hosts: hosts})
	}
	return cs, nil
}

// checkCredential validates c; its errors never quote the value.
func checkCredential(c Credential) (*egressrule.Rules, error) {
	nameErr, valueErr := credrule.ValidName(c.Name), credrule.CheckValue(c.Value)
	switch {
	case nameErr != nil:
		return nil, nameErr
	case !isToken(c.Header):
		return nil, fmt.Errorf("header %.40q is not a header name", c.Header)
	case len(c.Placeholder) < minPlaceholderLen || len(c.Placeholder) > maxCredentialLen || !credrule.HeaderSafe(c.Placeholder) || strings.ContainsAny(c.Placeholder, " \t"):
		return nil, fmt.Errorf("a placeholder is %d to %d printable characters without spaces (NewPlaceholder makes one)", minPlaceholderLen, maxCredentialLen)
	case valueErr != nil:
		return nil, valueErr
	case len(c.Prefix) > 64 || !credrule.HeaderSafe(c.Prefix):
		return nil, fmt.Errorf("prefix %.40q has a character a header cannot carry", c.Prefix)
	case strings.Contains(c.Value, c.Placeholder):
		return nil, errors.New("the value contains the placeholder")
	case len(c.Hosts) == 0:
		return nil, errors.New("no hosts: a credential goes only to the hosts it names")
	}
	for _, h := range c.Hosts {
		r, err := egressrule.ParseRule(h)
		if err != nil {
			return nil, fmt.Errorf("host %w", err)
		}
		if r.Deny || r.Methods != "" || r.Path != "" {
			return nil, fmt.Errorf("host %.80q: a credential's host is host[:port], without methods, a path or '!'", h)
		}
	}
	return egressrule.ParseRules(c.Hosts)
}

// forHost returns the credentials in force whose hosts match host:port.
func (cs *credentials) forHost(host string, port int) []*credential {
	if cs == nil {
		return nil
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var out []*credential
	for _, c := range cs.list {
		if _, ok := c.hosts.Match(host, port); ok && !cs.revoked[c.Name] {
			out = append(out, c)
		}
	}
	return out
}

// all returns every credential, revoked or not: a revoked value is no less
// secret.
func (cs *credentials) all() []*credential {
	if cs == nil {
		return nil
	}
	return cs.list
}

// belongs reports whether any credential, revoked or not, may go to
// host:port: the proxy terminates TLS for such a host.
func (cs *credentials) belongs(host string, port int) bool {
	if cs == nil {
		return false
	}
	for _, c := range cs.list {
		if _, ok := c.hosts.Match(host, port); ok {
			return true
		}
	}
	return false
}

// Revoke stops the credential name from going on the wire from the next
// request on; its placeholder is then sent as it is. Terminated
// connections that carried it are closed. It writes a revoke
// event the first time. It reports false for a name the proxy does not
// know (true for one already revoked).
func (p *Proxy) Revoke(name string) bool {
	cs := p.creds
	if cs == nil {
		return false
	}
	known := false
	for _, c := range cs.list {
		known = known || c.Name == name
	}
	if !known {
		return false
	}
	cs.mu.Lock()
	already := cs.revoked[name]
	cs.revoked[name] = true
	var ends []*tunnel
	for conn, names := range cs.carriers {
		if names[name] {
			ends = append(ends, conn)
		}
	}
	cs.mu.Unlock()
	// What the value opened ends with it: a websocket, a stream, a
	// kept-alive connection (a client opens a new one, without it).
	for _, conn := range ends {
		conn.close()
	}
	if !already {
		err := p.limits.write(p.identity, p.events, Event{
			Identity:   p.identity,
			Kind:       egresslog.KindRevoke,
			Credential: name,
			Allowed:    false,
			Reason:     "credential revoked: no longer put on the wire",
		})
		if err != nil {
			p.log.Error("egress event lost", "error", err, "kind", egresslog.KindRevoke, "credential", name)
		}
	}
	return true
}

// Credentials returns the names of the credentials still in force, in the
// order configured.
func (p *Proxy) Credentials() []string {
	cs := p.creds
	if cs == nil {
		return nil
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var out []string
	for _, c := range cs.list {
		if !cs.revoked[c.Name] {
			out = append(out, c.Name)
		}
	}
	return out
}

// headerNameOf is the canonical form of a credential's header.
func headerNameOf(c *credential) string { return http.CanonicalHeaderKey(c.Header) }
