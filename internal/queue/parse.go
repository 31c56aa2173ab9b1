package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
	"github.com/bot-bottle/bot-bottle/sdk/names"
)

// Limits on what a bottle may send. A request is read by a human, so anything
// longer than a person reads is refused rather than truncated.
const (
	MaxRequestSize   = 64 << 10 // whole inbox file
	MaxReasonLen     = 4 << 10
	MaxDockerfileLen = 48 << 10
	MaxRunLen        = 4 << 10
	MaxHostLen       = 253 + len("[]:65535")
)

// SubmissionVersion is the version of the inbox file format the helper writes.
const SubmissionVersion = 1

// Submission is the file a bottle drops into its inbox: the only shape the
// host accepts from inside. Identity is optional; when present it must be the
// inbox's own.
type Submission struct {
	Version    int    `json:"version,omitempty"`
	Identity   string `json:"identity,omitempty"`
	Kind       Kind   `json:"kind"`
	Reason     string `json:"reason"`
	Dockerfile string `json:"dockerfile,omitempty"`
	Run        string `json:"run,omitempty"`
	Host       string `json:"host,omitempty"`
}

var (
	requestSuffixRE = regexp.MustCompile(`^[a-z0-9]{6}$`)
	tokenRE         = regexp.MustCompile(`^[a-z0-9]{16,64}$`)
	labelRE         = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidIdentity reports whether s is a well-formed bottle identity (the one
// rule, sdk/names). It keeps identities usable as a single path component.
func ValidIdentity(s string) bool { return names.Valid(s) }

// ValidToken reports whether s is a well-formed client token.
func ValidToken(s string) bool { return tokenRE.MatchString(s) }

// identityOf returns the identity part of a request id.
func identityOf(id string) (string, error) {
	identity, suffix, ok := cutLast(id, "-")
	if !ok || !names.Valid(identity) || !requestSuffixRE.MatchString(suffix) {
		return "", fmt.Errorf("invalid request id %q: want <identity>-<6 chars of [a-z0-9]>", id)
	}
	return identity, nil
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// ParseRequest parses and validates one untrusted inbox file for the bottle
// identity. The result is pending and has no id yet: the host mints it.
func ParseRequest(data []byte, identity string) (Request, error) {
	if !ValidIdentity(identity) {
		return Request{}, fmt.Errorf("invalid identity %q", identity)
	}
	if len(data) > MaxRequestSize {
		return Request{}, fmt.Errorf("request too large: %d bytes, limit %d", len(data), MaxRequestSize)
	}
	if !utf8.Valid(data) {
		// encoding/json would silently replace bad bytes; refuse instead so
		// that what the operator reads is what was sent.
		return Request{}, errors.New("request is not valid UTF-8")
	}
	var s Submission
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return Request{}, fmt.Errorf("malformed request: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Request{}, errors.New("malformed request: data after the JSON object")
	}
	return s.validate(identity)
}

// Validate checks a submission as the host would, for the helper's benefit:
// a bad request fails before it is sent.
func (s Submission) Validate(identity string) (Request, error) {
	if !ValidIdentity(identity) {
		return Request{}, fmt.Errorf("invalid identity %q", identity)
	}
	return s.validate(identity)
}

func (s Submission) validate(identity string) (Request, error) {
	if s.Version != 0 && s.Version != SubmissionVersion {
		return Request{}, fmt.Errorf("unsupported request version %d", s.Version)
	}
	if s.Identity != "" && s.Identity != identity {
		return Request{}, fmt.Errorf("request names identity %q, but it came from %q's queue", s.Identity, identity)
	}
	if strings.TrimSpace(s.Reason) == "" {
		return Request{}, errors.New("reason: missing")
	}
	if err := checkText("reason", s.Reason, MaxReasonLen, true); err != nil {
		return Request{}, err
	}
	r := Request{Identity: identity, Kind: s.Kind, Reason: s.Reason, Status: StatusPending}
	switch s.Kind {
	case KindCapability:
		if s.Host != "" {
			return Request{}, errors.New("host: not allowed in a capability request")
		}
		switch {
		case s.Dockerfile != "" && s.Run != "":
			return Request{}, errors.New("capability: give either dockerfile or run, not both")
		case s.Dockerfile != "":
			if strings.TrimSpace(s.Dockerfile) == "" {
				return Request{}, errors.New("dockerfile: empty")
			}
			if err := checkText("dockerfile", s.Dockerfile, MaxDockerfileLen, true); err != nil {
				return Request{}, err
			}
			r.Dockerfile = s.Dockerfile
		case s.Run != "":
			if err := checkRun(s.Run); err != nil {
				return Request{}, err
			}
			r.Run = s.Run
		default:
			return Request{}, errors.New("capability: missing dockerfile or run")
		}
	case KindEgress:
		if s.Dockerfile != "" || s.Run != "" {
			return Request{}, errors.New("egress: dockerfile and run are not allowed")
		}
		h, err := NormalizeHost(s.Host)
		if err != nil {
			return Request{}, fmt.Errorf("host: %w", err)
		}
		r.Host = h
	case "":
		return Request{}, errors.New("kind: missing")
	default:
		return Request{}, fmt.Errorf("kind: %q is not capability or egress", string(s.Kind))
	}
	return r, nil
}

// checkText refuses text that could mislead the operator who reads it: control
// characters (terminal escapes) and bidirectional overrides.
func checkText(field, s string, limit int, multiline bool) error {
	if len(s) > limit {
		return fmt.Errorf("%s: too long (%d bytes, limit %d)", field, len(s), limit)
	}
	for i, c := range s {
		switch {
		case c == '\t', multiline && c == '\n':
		case unicode.IsControl(c), isBidi(c), c == utf8.RuneError:
			return fmt.Errorf("%s: forbidden character %U at byte %d", field, c, i)
		}
	}
	return nil
}

func isBidi(c rune) bool {
	return (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069) || c == 0x200E || c == 0x200F || c == 0x061C
}

func checkRun(run string) error {
	if strings.TrimSpace(run) == "" {
		return errors.New("run: empty")
	}
	// One line only: a newline would smuggle further Dockerfile instructions
	// past the operator's reading of "a RUN line".
	if err := checkText("run", run, MaxRunLen, false); err != nil {
		return err
	}
	if strings.HasSuffix(strings.TrimRight(run, " \t"), `\`) {
		return errors.New("run: must not end with a line continuation")
	}
	return nil
}

// NormalizeHost validates an egress target "host[:port]" and returns it in
// lower case. Host is a DNS name (optionally "*." for a wildcard), an IPv4
// address or a bracketed IPv6 address; port is 1-65535.
func NormalizeHost(s string) (string, error) {
	if s == "" {
		return "", errors.New("missing")
	}
	if len(s) > MaxHostLen {
		return "", fmt.Errorf("too long (%d bytes)", len(s))
	}
	if strings.ContainsAny(s, "!/ ") {
		// A deny rule or one about requests: egressrule's grammar alone.
		r, err := egressrule.ParseRule(s)
		if err != nil {
			return "", err
		}
		if err := checkDanger(s); err != nil {
			return "", err
		}
		return r.String(), nil
	}
	s = strings.ToLower(s)
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", fmt.Errorf("%q: unclosed [", s)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if !strings.HasPrefix(port, ":") {
				return "", fmt.Errorf("%q: want [ipv6]:port", s)
			}
			port = port[1:]
			if err := checkPort(port); err != nil {
				return "", fmt.Errorf("%q: %w", s, err)
			}
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" || a.Is4In6() {
			return "", fmt.Errorf("%q: not an IPv6 address", s)
		}
		if err := checkDanger(s); err != nil {
			return "", err
		}
		return s, nil
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if err := checkPort(port); err != nil {
			return "", fmt.Errorf("%q: %w", s, err)
		}
	}
	if err := checkHostname(host); err != nil {
		return "", fmt.Errorf("%q: %w", s, err)
	}
	if err := checkDanger(s); err != nil {
		return "", err
	}
	return s, nil
}

// checkDanger refuses the egress classes no operator should be asked about
// (see egressrule.CheckRequested); the agent is told why in one line.
func checkDanger(s string) error {
	_, err := egressrule.CheckRequested(s)
	return err
}

func checkPort(p string) error {
	if p == "" || len(p) > 5 || p[0] == '0' || strings.Trim(p, "0123456789") != "" {
		return fmt.Errorf("bad port %q", p)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bad port %q", p)
	}
	return nil
}

func checkHostname(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(name) > 253 {
		return errors.New("bad host name")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if !labelRE.MatchString(l) {
			return fmt.Errorf("bad host name label %q", l)
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		// All-numeric top label: only a real IPv4 address is allowed, so that
		// "1.2.3" or "999.1.1.1" never reach a resolver.
		a, err := netip.ParseAddr(name)
		if err != nil || !a.Is4() || name != h {
			return errors.New("not a valid IPv4 address or host name")
		}
	}
	return nil
}
