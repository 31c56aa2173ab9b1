// Package reqview lays out a request from inside a bottle for the operator
// who decides it, the same way in the dashboard and in `bot-bottle
// requests`: the facts first — what kind, who asks, the host or the exact
// Dockerfile change with its size and its RUN and USER lines marked — and
// the bottle's reason last, quoted and behind a margin, so that nothing the
// bottle wrote can pass for a fact or push the change out of sight. Every
// value from the request goes through sdk/render.
package reqview

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/mattn/go-runewidth"

	"github.com/bot-bottle/bot-bottle/internal/audit"
	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// Request is a request with what the operator needs to judge it.
type Request struct {
	queue.Request
	Agent string
	// Diff is the change a capability request makes to the bottle's
	// Dockerfile, as a unified diff; DiffErr says why there is none.
	Diff    string
	DiffErr string
	// Raises is what the change does that raises privilege.
	Raises []audit.Raise
	// Warnings are what the approver must know (e.g. that a whole
	// Dockerfile replaces the bottle's snapshot).
	Warnings []string
}

// Describe adds to r the agent of its bottle and, for a capability
// request, the diff it would make.
func Describe(env *lifecycle.Env, r queue.Request) Request {
	req := Request{Request: r}
	if m, err := env.Store.ReadMetadata(r.Identity); err == nil {
		req.Agent = m.AgentName
	}
	if r.Kind == queue.KindCapability {
		req.setChange(Diff(env, r))
	}
	return req
}

// Change is what approving a capability request would change.
type Change struct {
	Diff, DiffErr string
	Raises        []audit.Raise
	Warnings      []string
}

// Diff is the unified diff a capability request would make to its bottle's
// Dockerfile (or why there is none), what in it raises privilege, and the
// approver's warnings.
func Diff(env *lifecycle.Env, r queue.Request) Change {
	p, err := env.Propose(r)
	if err != nil {
		return Change{DiffErr: render.Error(err)}
	}
	return Change{Diff: audit.DockerfileDiff(p.Base, p.Next), Raises: audit.PrivilegeRaises(p.Base, p.Next), Warnings: p.Warnings}
}

// The Change fields, set on a Request.
func (r *Request) setChange(c Change) {
	r.Diff, r.DiffErr, r.Raises, r.Warnings = c.Diff, c.DiffErr, c.Raises, c.Warnings
}

// Style renders text, e.g. a lipgloss.Style's Render.
type Style = func(...string) string

// Styles colour the parts of a view; a nil style leaves the text plain.
type Styles struct {
	Title, Label, File, Hunk, Add, Del, Marked, Reason Style
}

func apply(f Style, s string) string {
	if f == nil {
		return s
	}
	return f(s)
}

// Marker starts a Dockerfile line that runs something or changes the user;
// every other diff line starts with two spaces.
const Marker = "▶ "

// ReasonMargin starts every line of a reason, so that no part of it sits
// where a fact would.
const ReasonMargin = "  │ "

// Facts are the lines about r that come from the request's structure and
// the host, never from its free text: the header, the host or the change,
// and the whole diff — or, with changesOnly (a preview short of room), the
// diff's file, added and removed lines and a count of the rest.
func Facts(r Request, now time.Time, st Styles, changesOnly bool) []string {
	agent := r.Agent
	if agent == "" {
		agent = "?"
	}
	out := []string{apply(st.Title, fmt.Sprintf("%s request %s from %s (agent %s), %s ago",
		render.Text(string(r.Kind)), render.Text(r.ID), render.Text(r.Identity), render.Text(agent), Age(r.CreatedAt, now)))}
	label := func(l, v string) { out = append(out, apply(st.Label, l)+" "+v) }
	switch r.Kind {
	case queue.KindEgress:
		label("host:", render.Text(r.Host))
	case queue.KindCapability:
		if r.Run != "" {
			label("change:", "RUN "+render.Text(r.Run))
		} else {
			label("change:", fmt.Sprintf("a Dockerfile of %s", size(r.Dockerfile)))
		}
		for _, x := range r.Raises {
			out = append(out, apply(st.Marked, "! raises privilege: "+render.Text(x.String())))
		}
		for _, w := range r.Warnings {
			out = append(out, apply(st.Marked, "! "+render.Text(w)))
		}
		if r.Diff == "" {
			if r.DiffErr != "" {
				label("no diff:", render.OneLine(r.DiffErr))
			}
			// Without a diff the operator still sees the exact text.
			text := r.Dockerfile
			if r.Run != "" {
				text = "RUN " + r.Run
			}
			label("requested text:", size(text))
			out = append(out, diffLines(text, st, false)...)
			break
		}
		lines := diffLines(r.Diff, st, true)
		if !changesOnly {
			label("diff:", size(r.Diff))
			out = append(out, lines...)
			break
		}
		var shown []string
		for i, l := range render.Lines(r.Diff) {
			if strings.HasPrefix(l, "+") || strings.HasPrefix(l, "-") {
				shown = append(shown, lines[i])
			}
		}
		note := size(r.Diff)
		if hidden := len(lines) - len(shown); hidden > 0 {
			note += fmt.Sprintf(" (%d unchanged not shown)", hidden)
		}
		label("diff:", note)
		out = append(out, shown...)
	}
	return out
}

func size(s string) string {
	lines := len(render.Lines(s))
	l := "lines"
	if lines == 1 {
		l = "line"
	}
	return fmt.Sprintf("%d %s, %d bytes", lines, l, len(s))
}

// diffLines renders each line of a diff (or plain Dockerfile text) with its
// RUN and USER instructions marked.
func diffLines(s string, st Styles, isDiff bool) []string {
	var out []string
	for _, l := range render.Lines(s) {
		body := l
		if isDiff && len(body) > 0 && strings.ContainsRune("+- ", rune(body[0])) &&
			!strings.HasPrefix(body, "+++") && !strings.HasPrefix(body, "---") {
			body = body[1:]
		}
		prefix := "  "
		if marked(body) {
			prefix = Marker
		}
		var style Style
		switch {
		case prefix == Marker && st.Marked != nil:
			style = st.Marked
		case !isDiff:
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
			style = st.File
		case strings.HasPrefix(l, "@@"):
			style = st.Hunk
		case strings.HasPrefix(l, "+"):
			style = st.Add
		case strings.HasPrefix(l, "-"):
			style = st.Del
		}
		out = append(out, prefix+apply(style, l))
	}
	return out
}

// marked reports whether a Dockerfile line is a RUN or USER instruction.
func marked(line string) bool {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false
	}
	w := strings.ToUpper(f[0])
	return w == "RUN" || w == "USER"
}

// ReasonTitle introduces the reason; it says whose words follow.
func ReasonTitle(reason string) string {
	return fmt.Sprintf("reason, as the bottle wrote it (%d bytes):", len(reason))
}

// Reason is the bottle's reason as quoted, escaped text behind
// ReasonMargin, wrapped to width (0: one line). With fold > 0 at most fold
// lines are shown, the last saying how much was left off.
func Reason(reason string, width, fold int, st Styles) []string {
	q := render.QuotedBounded(reason, 0)
	var chunks []string
	if width <= 0 {
		chunks = []string{q}
	} else {
		chunks = hardWrap(q, max(10, width-runewidth.StringWidth(ReasonMargin)))
	}
	if fold > 0 && len(chunks) > fold {
		left := len(chunks) - fold + 1
		chunks = append(chunks[:fold-1], fmt.Sprintf("… %d more lines of reason", left))
	}
	out := make([]string, len(chunks))
	for i, c := range chunks {
		out[i] = ReasonMargin + apply(st.Reason, c)
	}
	return out
}

// hardWrap cuts s into pieces of at most width cells, preferring a space.
func hardWrap(s string, width int) []string {
	var out []string
	for runewidth.StringWidth(s) > width {
		cut := runewidth.Truncate(s, width, "")
		if i := strings.LastIndexFunc(cut, unicode.IsSpace); i > width/2 {
			cut = cut[:i+1]
		}
		out = append(out, cut)
		s = s[len(cut):]
	}
	return append(out, s)
}

// Age renders how long ago t was the way a glance reads it.
func Age(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return Short(now.Sub(t))
}

// Short renders a duration the way a glance reads it: 42s, 5m07s, 3h12m, 2d4h.
func Short(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
