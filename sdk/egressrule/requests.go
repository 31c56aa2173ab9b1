package egressrule

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// maxMethods bounds the methods one rule names.
const maxMethods = 16

// methods are the methods a rule can name: HTTP's own and WebDAV's. A
// fixed list, so that a stray word before a host is an error, not a rule.
var methods = []string{
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT",
}

// parseMethods validates "GET,HEAD" (any case) and returns it upper case,
// sorted and without duplicates.
func parseMethods(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty method list (one space between the methods and the host)")
	}
	parts := strings.Split(strings.ToUpper(s), ",")
	if len(parts) > maxMethods {
		return "", fmt.Errorf("%d methods, more than %d", len(parts), maxMethods)
	}
	for _, m := range parts {
		switch {
		case m == "":
			return "", errors.New("empty method in the list (METHOD,METHOD host)")
		case m == "CONNECT":
			return "", errors.New("CONNECT is how a tunnel opens, not a request a rule can name; name the host alone")
		case !slices.Contains(methods, m):
			return "", fmt.Errorf("%.20q is not an HTTP method (%s); a host has no spaces", m, strings.Join(methods, ", "))
		}
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), ","), nil
}

// pathChars are the characters a rule's path may have: RFC 3986's pchar
// without '%' (a rule's path is the decoded path, so escapes would be
// ambiguous) and without the quote (so that a rule can always be quoted
// for a shell).
const pathChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&()*+,;=:@/"

func checkRulePath(p string) error {
	switch {
	case len(p) > MaxPathLen:
		return fmt.Errorf("path is %d bytes long, more than %d", len(p), MaxPathLen)
	case strings.Trim(p, pathChars) != "":
		i := strings.IndexFunc(p, func(r rune) bool { return !strings.ContainsRune(pathChars, r) })
		return fmt.Errorf("path has %q; a rule's path is letters, digits and -._~!$&()*+,;=:@/ (unescaped, no query)", p[i:i+1])
	case !CleanPath(p):
		return errors.New("path is not in canonical form (no //, /./ or /../)")
	}
	return nil
}

// CleanPath reports whether p, a decoded request path, is in the one form
// a path rule judges: absolute, with no empty, "." or ".." segment. A
// server resolves those before it routes, so a prefix rule could otherwise
// be walked around (/repos/acme/../../admin); a request with such a path
// is refused wherever a path rule applies.
//
// Servers differ in what a segment is, so p must be clean as a lenient
// server reads it too (see lenientPath: "\" a separator, ";params"
// dropped, as in /a/..;/b or /a\..\b), and must not hold an encoded '.',
// '/' or '\' ("%2e", still there after decoding once), which a server
// that decodes twice would resolve.
func CleanPath(p string) bool {
	if !cleanSegments(p) || !cleanSegments(lenientPath(p)) {
		return false
	}
	l := strings.ToLower(p)
	return !strings.Contains(l, "%2e") && !strings.Contains(l, "%2f") && !strings.Contains(l, "%5c")
}

func cleanSegments(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		switch {
		case s == "." || s == "..":
			return false
		case s == "" && i != len(segs)-1:
			return false
		}
	}
	return true
}

// lenientPath is p as the most lenient common servers route it: a
// backslash is a '/' (IIS, several Node and Python servers) and each
// segment's ";params" are dropped (Tomcat, Jetty, Spring).
func lenientPath(p string) string {
	if !strings.ContainsAny(p, "\\;") {
		return p
	}
	segs := strings.Split(strings.ReplaceAll(p, "\\", "/"), "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

// Verdict is what the rules say about a connection or a request.
type Verdict struct {
	// Allowed: the rules allow it.
	Allowed bool
	// Rule is the rule that decided, in canonical form: the one that
	// allowed it, or the deny rule that refused it. "" when no rule
	// names it.
	Rule string
	// Requests (for a connection): some rule for this host:port is about
	// requests, so each request on the connection must be judged with
	// Request, which needs the proxy to read them.
	Requests bool
	// Reason says, for a refusal, why: "not in the allowlist", "denied by
	// rule", "no rule allows the request", "path not in canonical form".
	Reason string
}

// Reasons of refused verdicts.
const (
	ReasonNotAllowed = "not in the allowlist"
	ReasonDenied     = "denied by rule"
	ReasonNoRequest  = "no rule allows the request"
	ReasonUnclean    = "path not in canonical form"
)

// Conn is what the rules say about opening a connection to host:port. A
// "!host" rule refuses it; otherwise a rule about the host, or a rule about
// some of its requests, allows it (the latter with Requests set: the
// requests must each be judged). A host's exact rule wins over a wildcard.
func (rs *Rules) Conn(host string, port int) Verdict {
	if rs == nil || port < 1 || port > 65535 {
		return Verdict{Reason: ReasonNotAllowed}
	}
	h := normHost(host)
	var v Verdict
	for _, r := range rs.deny {
		if !r.hostMatches(h, port) {
			continue
		}
		if !r.Requests() {
			return Verdict{Rule: r.String(), Reason: ReasonDenied}
		}
		v.Requests = true
	}
	var first string
	for _, r := range rs.requests {
		if r.hostMatches(h, port) {
			v.Requests = true
			if first == "" {
				first = r.String()
			}
		}
	}
	if rule, ok := rs.matchHost(host, port); ok {
		v.Allowed, v.Rule = true, rule
	} else if first != "" {
		v.Allowed, v.Rule = true, first
	} else {
		v.Reason = ReasonNotAllowed
	}
	return v
}

// Request is what the rules say about one request to host:port: a deny
// rule that matches it refuses it, whatever allows it; then a rule about
// the whole host allows it, or one whose methods and path prefix match it
// (the longest prefix is named). path is the decoded request path, without
// the query; where a path rule applies to the host, a path that is not
// clean (CleanPath) is refused.
func (rs *Rules) Request(host string, port int, method, path string) Verdict {
	cv := rs.Conn(host, port)
	if !cv.Allowed && cv.Rule != "" {
		return cv // "!host"
	}
	h := normHost(host)
	method = strings.ToUpper(method)
	clean := CleanPath(path)
	// A deny rule refuses a request that any reading of its path puts
	// under the rule's path, in any case; an allow rule allows one only
	// when every reading is under its path, in the rule's case.
	lenient := lenientPath(path)
	for _, r := range rs.deny {
		if r.hostMatches(h, port) && r.Path != "" && !clean {
			return Verdict{Reason: ReasonUnclean, Rule: r.String()}
		}
		if r.hostMatches(h, port) && (r.denies(method, path, r.Path) || r.denies(method, lenient, lenientPath(r.Path))) {
			return Verdict{Rule: r.String(), Reason: ReasonDenied}
		}
	}
	var best *Rule
	for i := range rs.requests {
		r := &rs.requests[i]
		if !r.hostMatches(h, port) {
			continue
		}
		if r.Path != "" && !clean {
			return Verdict{Reason: ReasonUnclean, Rule: r.String()}
		}
		if r.requestMatches(method, path, r.Path) && r.requestMatches(method, lenient, lenientPath(r.Path)) && (best == nil || len(r.Path) > len(best.Path)) {
			best = r
		}
	}
	if best != nil {
		return Verdict{Allowed: true, Rule: best.String()}
	}
	if rule, ok := rs.matchHost(host, port); ok {
		return Verdict{Allowed: true, Rule: rule}
	}
	if cv.Allowed {
		return Verdict{Reason: ReasonNoRequest}
	}
	return Verdict{Reason: ReasonNotAllowed}
}

// RequestRules returns the rules about requests (methods, a path or "!")
// that apply to host:port, in canonical form: what a refusal lists.
func (rs *Rules) RequestRules(host string, port int) []string {
	if rs == nil {
		return nil
	}
	h := normHost(host)
	var out []string
	for _, list := range [][]Rule{rs.requests, rs.deny} {
		for _, r := range list {
			if r.hostMatches(h, port) {
				out = append(out, r.String())
			}
		}
	}
	return out
}

// NamesMethods reports whether a rule about host:port's requests (allow or
// deny) names methods: only then must a request's method overrides be
// looked for, a form body's among them.
func (rs *Rules) NamesMethods(host string, port int) bool {
	if rs == nil || !rs.methods {
		return false
	}
	h := normHost(host)
	for _, list := range [][]Rule{rs.requests, rs.deny} {
		for _, r := range list {
			if r.Methods != "" && r.hostMatches(h, port) {
				return true
			}
		}
	}
	return false
}

// DeniesAddr reports the "!address" rule that refuses ap, so that a name
// an allow rule allows cannot lead to an address a deny rule refuses.
func (rs *Rules) DeniesAddr(ap netip.AddrPort) (rule string, ok bool) {
	if rs == nil || !ap.IsValid() {
		return "", false
	}
	a := ap.Addr().WithZone("").Unmap()
	for _, r := range rs.deny {
		if !r.Requests() && r.Addr.IsValid() && r.Addr == a && r.Port == ap.Port() {
			return r.String(), true
		}
	}
	return "", false
}

func normHost(host string) string {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

// hostMatches: h is normHost's form.
func (r Rule) hostMatches(h string, port int) bool {
	if int(r.Port) != port {
		return false
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return r.Addr.IsValid() && r.Addr == a.WithZone("").Unmap()
	}
	switch {
	case r.Addr.IsValid():
		return false
	case r.Wildcard:
		return strings.HasSuffix(h, "."+r.Host)
	default:
		return h == r.Host
	}
}

// denies is requestMatches for a deny rule: its path matches in any case,
// as a server that routes without regard to case would.
func (r Rule) denies(method, path, prefix string) bool {
	if r.Methods != "" && !slices.Contains(strings.Split(r.Methods, ","), method) {
		return false
	}
	return len(path) >= len(prefix) && strings.EqualFold(path[:len(prefix)], prefix)
}

// requestMatches: the rule names method (or none), and path starts with
// prefix (the rule's path, read as path is).
func (r Rule) requestMatches(method, path, prefix string) bool {
	if r.Methods != "" && !slices.Contains(strings.Split(r.Methods, ","), method) {
		return false
	}
	return strings.HasPrefix(path, prefix)
}
