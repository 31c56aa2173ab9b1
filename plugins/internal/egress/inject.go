package egress

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/bot-bottle/bot-bottle/sdk/egresslog"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// maxEventPath bounds a request path in events and refusals.
const maxEventPath = 256

// eventPath is r's path as events show it: bounded, every control or
// invisible character escaped.
func eventPath(r *http.Request) string { return render.Bounded(requestPath(r), maxEventPath) }

func requestPath(r *http.Request) string {
	if r.URL.Path == "" {
		return "/"
	}
	return r.URL.Path
}

// checkRequest judges one request the proxy reads (plain HTTP, or inside a
// terminated CONNECT) by rules, the rules in force. A refusal is recorded
// and returned with its message.
func (p *Proxy) checkRequest(rules *egressrule.Rules, t target, r *http.Request) (decision, bool) {
	path := requestPath(r)
	var v egressrule.Verdict
	method, refused := r.Method, r.Method
	methods, err := requestMethods(r, rules.NamesMethods(t.host(), int(t.port)))
	if err != nil {
		d := decision{status: http.StatusForbidden, path: eventPath(r), reason: "form body not checked for a method override",
			message: fmt.Sprintf("egress to %s refused: %v, and a rule of bottle %s for %s names methods", t, err, p.identity, t)}
		return p.record(t, r.Method, d), false
	}
	for i, m := range methods {
		if v = rules.Request(t.host(), int(t.port), m, path); !v.Allowed {
			refused = m
			if i > 0 {
				method = render.Bounded(m, 40) + " (by override)"
			}
			break
		}
	}
	d := decision{rule: v.Rule, path: eventPath(r), allowed: v.Allowed}
	if v.Allowed {
		return d, true
	}
	shown := render.Bounded(path, maxEventPath)
	d.status = http.StatusForbidden
	switch v.Reason {
	case egressrule.ReasonDenied:
		d.reason = "denied by rule " + v.Rule
		d.message = fmt.Sprintf("egress to %s refused: %s %s is denied by rule %s of bottle %s", t, method, shown, v.Rule, p.identity)
	case egressrule.ReasonUnclean:
		d.reason = egressrule.ReasonUnclean
		d.message = fmt.Sprintf("egress to %s refused: path %s has an empty, . or .. segment (as sent, or as a server reading '\\' as '/' or dropping ;params would see it, or an encoded '.', '/' or '\\' after decoding), and rule %s of bottle %s judges paths", t, shown, v.Rule, p.identity)
	case egressrule.ReasonNoRequest:
		d.reason = egressrule.ReasonNoRequest
		d.message = fmt.Sprintf("egress to %s refused: no rule of bottle %s allows %s %s (its rules for %s: %s)",
			t, p.identity, method, shown, t, strings.Join(rules.RequestRules(t.host(), int(t.port)), ", "))
		ask := strings.ToUpper(refused) + " " + t.String() + path
		if _, err := egressrule.ParseRule(ask); err == nil {
			d.ask = egressrule.AskCommand(ask) + " --reason WHY"
			d.message += " (ask: " + egressrule.AskCommand(ask) + " --reason ...)"
		}
	default:
		d.reason = reasonNotAllowed
		d.message = fmt.Sprintf("egress to %s refused: not in the allowlist of bottle %s (ask: %s --reason ...)",
			t, p.identity, egressrule.AskCommand(t.String()))
	}
	return p.record(t, r.Method, d), false
}

// methodOverrides are the headers through which frameworks (Google's APIs,
// Express's method-override, Symfony, ASP.NET) let a request name the
// method they act on instead of its own.
var methodOverrides = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// requestMethods are r's method and every method r asks, by an override
// header or a _method query parameter, to be taken for: a rule about
// methods judges them all. With forms, a POST's form body (urlencoded or
// multipart, read here up to maxFormPeek and put back) is searched for a
// _method field too, as Rails, Laravel and Symfony read one; a bigger form
// cannot be checked, and is an error.
func requestMethods(r *http.Request, forms bool) ([]string, error) {
	out := []string{r.Method}
	for _, h := range methodOverrides {
		out = append(out, r.Header.Values(h)...)
	}
	if strings.Contains(r.URL.RawQuery, "_method") {
		out = append(out, r.URL.Query()["_method"]...)
	}
	if !forms || !strings.EqualFold(r.Method, http.MethodPost) || r.Body == nil || r.Body == http.NoBody {
		return out, nil
	}
	// Rack takes a POST without a (readable) Content-Type for a form.
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "" && mt != "application/x-www-form-urlencoded" && mt != "multipart/form-data" {
		return out, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxFormPeek+1))
	r.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(b), r.Body), Closer: r.Body}
	switch {
	case err != nil:
		return nil, fmt.Errorf("its form body could not be read: %v", err)
	case len(b) > maxFormPeek:
		return nil, fmt.Errorf("its form body is over %d bytes, too big to check for a _method override", maxFormPeek)
	}
	if mt != "multipart/form-data" {
		q, _ := url.ParseQuery(string(b))
		return append(out, q["_method"]...), nil
	}
	mr := multipart.NewReader(bytes.NewReader(b), params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			break
		}
		if part.FormName() == "_method" {
			v, _ := io.ReadAll(io.LimitReader(part, 64))
			out = append(out, string(v))
		}
	}
	return out, nil
}

// maxFormPeek bounds the form body read for a _method field: small, as
// it is held per request (maxTerminated of them at once), and a form
// without a file is far smaller.
const maxFormPeek = 64 << 10

// prepare puts the credentials that belong to t on r, and audits every
// placeholder of another credential r carries toward t (which is sent as
// it is). It refuses r only when an injection cannot be audited.
//
// A credential goes only on a request that leaves over TLS the proxy
// verified (secure): over plain HTTP — even to a credential's own host and
// port, as http://api.example.com:443/ asks — the value would cross the
// network in clear. Nor on TRACE, which a server answers by echoing the
// request, credential included, back to the bottle.
func (p *Proxy) prepare(t target, r *http.Request, rule string, secure bool) (injected []*credential, _ decision, _ bool) {
	if p.creds == nil || len(p.creds.list) == 0 {
		return nil, decision{allowed: true}, true
	}
	host, port := t.host(), int(t.port)
	base := Event{Identity: p.identity, Host: host, Port: port, Method: r.Method, Path: eventPath(r), Rule: rule, Allowed: true}
	var foreign []*credential
	for _, c := range p.creds.list {
		if _, own := c.hosts.Match(host, port); own {
			continue
		}
		foreign = append(foreign, c)
		if where := findPlaceholder(r, c.Placeholder); where != "" {
			p.exfiltration(base, c, where)
		}
	}
	if len(foreign) > 0 && r.Body != nil && r.Body != http.NoBody {
		r.Body = newBodyScanner(r.Body, foreign, func(c *credential) { p.exfiltration(base, c, "the body") })
	}
	for _, c := range p.creds.forHost(host, port) {
		name := headerNameOf(c)
		hit := false
		for _, v := range r.Header.Values(name) {
			hit = hit || strings.Contains(v, c.Placeholder)
		}
		if !hit {
			continue
		}
		if !secure || echoesRequest(r.Method) {
			p.log.Info("credential not put on the wire", "credential", c.Name, "host", host, "why", notInjected(secure))
			continue
		}
		ev := base
		ev.Kind, ev.Credential = egresslog.KindInject, c.Name
		ev.Reason = "credential " + c.Name + " put in header " + name
		if err := p.limits.write(p.identity, p.events, ev); err != nil {
			p.log.Error("egress event lost", "error", err, "kind", ev.Kind, "credential", c.Name, "host", host)
			return nil, decision{
				status:  http.StatusServiceUnavailable,
				reason:  "audit log unavailable",
				message: fmt.Sprintf("egress to %s refused: the bottle's egress audit log cannot be written, so credential %s is not sent", t, c.Name),
			}, false
		}
		r.Header.Set(name, c.Prefix+c.Value)
		injected = append(injected, c)
	}
	return injected, decision{allowed: true}, true
}

// refusedPlaceholders audits the placeholders of credentials that do not
// belong to t in a request the proxy refused: an attempt, though nothing
// went out. Under the bound on refusals (a refusal costs the bottle
// nothing); the body of a refused request is not read.
func (p *Proxy) refusedPlaceholders(t target, r *http.Request) {
	if p.creds == nil {
		return
	}
	host, port := t.host(), int(t.port)
	for _, c := range p.creds.list {
		if _, own := c.hosts.Match(host, port); own {
			continue
		}
		if where := findPlaceholder(r, c.Placeholder); where != "" && p.limits.admitRefused(p.identity, p.events) {
			p.exfiltration(Event{Identity: p.identity, Host: host, Port: port, Method: r.Method, Path: eventPath(r)}, c, where)
		}
	}
}

func (p *Proxy) exfiltration(base Event, c *credential, where string) {
	ev := base
	ev.Kind, ev.Credential = egresslog.KindExfiltration, c.Name
	ev.Reason = fmt.Sprintf("placeholder of credential %s in %s toward a host it does not belong to: sent unchanged", c.Name, where)
	if !ev.Allowed {
		ev.Reason = fmt.Sprintf("placeholder of credential %s in %s toward a host it does not belong to, in a request refused", c.Name, where)
	}
	if err := p.limits.write(p.identity, p.events, ev); err != nil {
		p.log.Error("egress event lost", "error", err, "kind", ev.Kind, "credential", c.Name, "host", ev.Host)
	}
	p.log.Warn("possible exfiltration", "credential", c.Name, "host", ev.Host, "where", where)
}

// findPlaceholder says where in r's request line or headers ph is, or "".
func findPlaceholder(r *http.Request, ph string) string {
	if strings.Contains(r.RequestURI, ph) || strings.Contains(r.URL.String(), ph) {
		return "the request line"
	}
	if strings.Contains(r.Host, ph) {
		return "the Host header"
	}
	for k, vs := range r.Header {
		if strings.Contains(k, ph) {
			return "a header name"
		}
		for _, v := range vs {
			if strings.Contains(v, ph) {
				return "header " + render.Bounded(k, 64)
			}
		}
	}
	return ""
}

// bodyScanner looks for placeholders in a request body as it streams to
// the upstream (the request is not held back: a body may be large), and
// reports each credential once.
type bodyScanner struct {
	io.ReadCloser
	creds []*credential
	found func(*credential)
	// keep is how many bytes of one read the next must see: one short of
	// the longest placeholder.
	keep int

	mu   sync.Mutex
	tail []byte // the last keep bytes read
	edge []byte // tail and the start of a read, where one may straddle
	seen map[string]bool
}

func newBodyScanner(body io.ReadCloser, creds []*credential, found func(*credential)) *bodyScanner {
	b := &bodyScanner{ReadCloser: body, creds: creds, found: found}
	for _, c := range creds {
		b.keep = max(b.keep, len(c.Placeholder)-1)
	}
	return b
}

func (b *bodyScanner) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if n > 0 {
		b.scan(buf[:n])
	}
	return n, err
}

func (b *bodyScanner) scan(chunk []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// A placeholder lies within chunk, or starts in the tail and ends in
	// chunk's first keep bytes: chunk itself is never copied.
	b.edge = append(append(b.edge[:0], b.tail...), chunk[:min(len(chunk), b.keep)]...)
	for _, c := range b.creds {
		if b.seen[c.Name] {
			continue
		}
		if ph := []byte(c.Placeholder); bytes.Contains(b.edge, ph) || bytes.Contains(chunk, ph) {
			if b.seen == nil {
				b.seen = map[string]bool{}
			}
			b.seen[c.Name] = true
			b.found(c)
		}
	}
	if len(chunk) >= b.keep {
		b.tail = append(b.tail[:0], chunk[len(chunk)-b.keep:]...)
		return
	}
	// A short read: the tail is the last keep bytes of the old tail and it.
	b.edge = append(append(b.edge[:0], b.tail...), chunk...)
	b.tail = append(b.tail[:0], b.edge[max(0, len(b.edge)-b.keep):]...)
}

// placeholdersInTarget audits a placeholder in the name a CONNECT asks for
// (a name under an allowed wildcard can carry one out in the lookup).
func (p *Proxy) placeholdersInTarget(t target, method string) {
	if p.creds == nil || t.name == "" {
		return
	}
	for _, c := range p.creds.list {
		if strings.Contains(t.name, strings.ToLower(c.Placeholder)) {
			p.exfiltration(Event{Identity: p.identity, Host: t.host(), Port: int(t.port), Method: method, Allowed: true}, c, "the CONNECT host name")
		}
	}
}

// echoesRequest: TRACE, and IIS's TRACK, answer with the request itself.
// Servers often compare methods without regard to case, so neither may
// carry a value in any case.
func echoesRequest(method string) bool {
	return strings.EqualFold(method, http.MethodTrace) || strings.EqualFold(method, "TRACK")
}

func notInjected(secure bool) string {
	if !secure {
		return "plain HTTP: the value would cross the network in clear"
	}
	return "TRACE or TRACK: the server would echo the value back"
}
