package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/table"
	"github.com/charmbracelet/bubbles/textinput"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/review"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// Options tune the dashboard; zero values take the defaults.
type Options struct {
	// Refresh is how often bottles and requests are reloaded (1 s).
	Refresh time.Duration
	// ListDeadline bounds one survey of the backends (3 s): a backend
	// that has not answered by then shows as unreachable.
	ListDeadline time.Duration
	// ActionTimeout bounds approve, deny, commit and stop (5 min: a
	// commit of a large bottle takes a while).
	ActionTimeout time.Duration
	// Log, when set, collects what lifecycle and plugins print while the
	// dashboard owns the terminal; its lines reach the status line.
	Log *Log
	// Now is the clock, for uptimes and ages.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Refresh <= 0 {
		o.Refresh = time.Second
	}
	if o.ListDeadline <= 0 {
		o.ListDeadline = 3 * time.Second
	}
	if o.ActionTimeout <= 0 {
		o.ActionTimeout = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

type pane int

const (
	paneBottles pane = iota
	paneRequests
)

type mode int

const (
	modeNormal  mode = iota
	modeFilter       // typing a filter
	modeDeny         // typing a reason for a denial
	modeRevoke       // typing the credential of a bottle to revoke
	modeConfirm      // y/n for a destructive action
	modeDetail       // full-screen detail of one request
	// modeDiff: full-screen diff of a review bottle.
	modeDiff
	// modeAttachFailed: an attach came back with an error. What the
	// operator typed meaning it for the bottle arrives now, so every key
	// but esc is dropped until they have read why.
	modeAttachFailed
)

// Messages the model's commands send back.
type (
	tickMsg    time.Time
	bottlesMsg struct {
		rows     []lifecycle.Row
		warnings []error
		err      error
	}
	requestsMsg struct {
		reqs []Request
		err  error
	}
	actionMsg struct {
		status string
		err    bool
		// hint is the command that brings a bottle back, when the
		// action left one to resume; it gets a line of its own.
		hint   string
		hintID string
		// diff, when set, is a review bottle's diff to show full screen.
		diff *string
	}
	attachDoneMsg struct {
		id   string
		err  error
		tail string
	}
)

// Model is the dashboard's bubbletea model.
type Model struct {
	ctx  context.Context
	src  Source
	opts Options

	width, height int
	focus         pane
	mode          mode

	bottles        []lifecycle.Row
	warnings       []error
	bottlesErr     error
	bottlesLoaded  bool
	loadingBottles bool

	reqs        []Request
	reqsErr     error
	reqsLoaded  bool
	loadingReqs bool

	// shown are the rows after the filter, in table order.
	shownBottles []lifecycle.Row
	shownReqs    []Request

	bt, rt table.Model
	detail viewport.Model

	filter  textinput.Model
	reason  textinput.Model
	denying string // request id being denied

	cred     textinput.Model
	revoking string // bottle whose credential is being named

	confirmText string
	confirmDo   func() tea.Cmd

	status    string
	statusErr bool
	statusAt  time.Time
	hint      string
	hintID    string // the bottle the hint is about: it goes with it

	// logLine is the latest thing the core or a plugin printed outside an
	// action, shown as a notice for logShown.
	logLine string
	logAt   time.Time

	busy      string // the action under way, or ""
	quitArmed bool

	keys     keyMap
	dkeys    detailKeys
	help     help.Model
	fullHelp bool
}

// New returns a dashboard over src. ctx ends every call it makes.
func New(ctx context.Context, src Source, opts Options) *Model {
	m := &Model{ctx: ctx, src: src, opts: opts.withDefaults(), width: 120, height: 40,
		keys: newKeyMap(), dkeys: newDetailKeys(), help: help.New()}
	m.bt = table.New(table.WithKeyMap(tableKeys()), table.WithColumns(bottleColumns(m.width, nil, m.now())))
	m.rt = table.New(table.WithKeyMap(tableKeys()), table.WithColumns(requestColumns(m.width, nil, m.now())))
	m.bt.Focus()
	m.filter = textinput.New()
	m.filter.Prompt = "filter: "
	m.filter.CharLimit = 100
	m.reason = textinput.New()
	m.reason.CharLimit = queue.MaxReasonLen
	m.cred = textinput.New()
	m.cred.CharLimit = 64
	m.detail = viewport.New(m.width, 10)
	m.styleTables()
	m.layout()
	return m
}

func (m *Model) now() time.Time { return m.opts.Now() }

// Init implements tea.Model: the first load and the clock.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.refresh(), m.tick())
}

func (m *Model) tick() tea.Cmd {
	return tea.Tick(m.opts.Refresh, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// refresh starts the loads that are not already under way, so a slow
// backend never piles up calls.
func (m *Model) refresh() tea.Cmd {
	var cmds []tea.Cmd
	if !m.loadingBottles {
		m.loadingBottles = true
		ctx, src, d := m.ctx, m.src, m.opts.ListDeadline
		cmds = append(cmds, func() tea.Msg {
			cctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			rows, warnings, err := src.Bottles(cctx)
			return bottlesMsg{rows: rows, warnings: warnings, err: err}
		})
	}
	if !m.loadingReqs {
		m.loadingReqs = true
		ctx, src, d := m.ctx, m.src, m.opts.ListDeadline
		cmds = append(cmds, func() tea.Msg {
			cctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			reqs, err := src.Requests(cctx)
			return requestsMsg{reqs: reqs, err: err}
		})
	}
	return tea.Batch(cmds...)
}

// Update implements tea.Model.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.layout()
		return m, nil
	case tickMsg:
		if m.busy == "" {
			m.takeLog(false)
		}
		return m, tea.Batch(m.tick(), m.refresh())
	case bottlesMsg:
		m.loadingBottles = false
		m.bottlesLoaded = true
		m.bottles, m.warnings, m.bottlesErr = msg.rows, msg.warnings, msg.err
		m.dropGoneHint()
		m.rebuild()
		return m, nil
	case requestsMsg:
		m.loadingReqs = false
		m.reqsLoaded = true
		m.reqs, m.reqsErr = msg.reqs, msg.err
		m.rebuild()
		return m, nil
	case actionMsg:
		m.busy = ""
		m.quitArmed = false
		m.setStatus(msg.status, msg.err)
		m.hint, m.hintID = msg.hint, msg.hintID
		if msg.diff != nil {
			m.mode = modeDiff
			m.layout()
			m.detail.SetContent(*msg.diff)
			m.detail.GotoTop()
		}
		m.takeLog(true)
		return m, m.refresh()
	case attachDoneMsg:
		m.attachDone(msg)
		return m, m.refresh()
	case tea.KeyMsg:
		return m.key(msg)
	}
	return m, nil
}

func (m *Model) key(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	if msg.Type == tea.KeyRunes && len(msg.Runes) > 1 && !msg.Paste && m.mode != modeFilter && m.mode != modeDeny && m.mode != modeRevoke {
		// Keys typed faster than the terminal is read arrive as one message
		// ("/shell-ab", "sy"): take them one at a time, as they were typed.
		var cmds []tea.Cmd
		for _, r := range msg.Runes {
			_, cmd := m.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
			cmds = append(cmds, cmd)
		}
		return m, tea.Batch(cmds...)
	}
	switch m.mode {
	case modeFilter:
		return m.filterKey(msg)
	case modeDeny:
		return m.denyKey(msg)
	case modeRevoke:
		return m.revokeKey(msg)
	case modeConfirm:
		return m.confirmKey(msg)
	case modeDetail:
		return m.detailKey(msg)
	case modeDiff:
		if msg.String() == "ctrl+c" {
			return m.quit()
		}
		if key.Matches(msg, m.dkeys.Back) {
			m.mode = modeNormal
			m.layout()
			return m, nil
		}
		var cmd tea.Cmd
		m.detail, cmd = m.detail.Update(msg)
		return m, cmd
	case modeAttachFailed:
		if msg.Type == tea.KeyEsc {
			m.mode = modeNormal
			m.layout()
		}
		return m, nil
	}
	// Bindings are enabled by focus and selection; a key may come before
	// the frame that would have updated them.
	m.enableKeys()
	k := m.keys
	switch {
	case key.Matches(msg, k.Quit):
		return m.quit()
	case key.Matches(msg, k.Tab):
		m.setFocus(1 - m.focus)
		return m, nil
	case key.Matches(msg, k.Help):
		m.fullHelp = !m.fullHelp
		m.layout()
		return m, nil
	case key.Matches(msg, k.Filter):
		m.mode = modeFilter
		m.layout()
		return m, m.filter.Focus()
	case key.Matches(msg, k.ClearFilter) && m.filter.Value() != "":
		m.filter.SetValue("")
		m.rebuild()
		return m, nil
	}
	if m.focus == paneRequests {
		r, ok := m.selectedRequest()
		switch {
		case !ok:
		case key.Matches(msg, k.Approve):
			return m, m.approve(r)
		case key.Matches(msg, k.Deny):
			return m, m.startDeny(r)
		case key.Matches(msg, k.Detail):
			m.mode = modeDetail
			m.layout()
			m.detail.SetContent(m.detailText(r, m.width))
			m.detail.GotoTop()
			return m, nil
		}
		var cmd tea.Cmd
		m.rt, cmd = m.rt.Update(msg)
		return m, cmd
	}
	b, ok := m.selectedBottle()
	switch {
	case !ok:
	case key.Matches(msg, k.Attach):
		return m, m.attach(b)
	case key.Matches(msg, k.Commit):
		m.confirm(fmt.Sprintf("commit %s? it is then kept until bot-bottle rm (y/n)", b.Identity), func() tea.Cmd { return m.commit(b) })
		return m, nil
	case key.Matches(msg, k.Stop):
		m.confirm(fmt.Sprintf("stop %s and remove its state? (y/n)", b.Identity), m.stop(b, false))
		return m, nil
	case key.Matches(msg, k.StopPreserve):
		return m, m.stop(b, true)()
	case key.Matches(msg, k.Revoke):
		if cs, ok := m.src.(CredentialSource); ok {
			return m, m.startRevoke(cs, b)
		}
	}
	if rs, ok := m.src.(ReviewSource); ok && b.Review != nil {
		if cmd, handled := m.reviewKey(msg, rs, b); handled {
			return m, cmd
		}
	}
	var cmd tea.Cmd
	m.bt, cmd = m.bt.Update(msg)
	return m, cmd
}

func (m *Model) quit() (tea.Model, tea.Cmd) {
	if m.busy != "" && !m.quitArmed {
		m.quitArmed = true
		m.setStatus(fmt.Sprintf("%s is still under way; press q again to quit anyway (it is cut short)", m.busy), true)
		return m, nil
	}
	return m, tea.Quit
}

func (m *Model) filterKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch msg.Type {
	case tea.KeyEnter:
		m.mode = modeNormal
		m.filter.Blur()
		m.layout()
		return m, nil
	case tea.KeyEsc:
		m.mode = modeNormal
		m.filter.Blur()
		m.filter.SetValue("")
		m.rebuild()
		m.layout()
		return m, nil
	}
	var cmd tea.Cmd
	m.filter, cmd = m.filter.Update(msg)
	m.rebuild()
	return m, cmd
}

func (m *Model) denyKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch msg.Type {
	case tea.KeyEsc:
		m.mode = modeNormal
		m.reason.Blur()
		m.setStatus("deny cancelled", false)
		m.layout()
		return m, nil
	case tea.KeyEnter:
		reason := strings.TrimSpace(m.reason.Value())
		if reason == "" {
			m.setStatus("a denial needs a reason: the agent is told why", true)
			return m, nil
		}
		id := m.denying
		m.mode = modeNormal
		m.reason.Blur()
		m.layout()
		return m, m.deny(id, reason)
	}
	var cmd tea.Cmd
	m.reason, cmd = m.reason.Update(msg)
	return m, cmd
}

func (m *Model) confirmKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	do := m.confirmDo
	m.mode, m.confirmDo, m.confirmText = modeNormal, nil, ""
	m.layout()
	if msg.String() == "y" || msg.String() == "Y" {
		return m, do()
	}
	m.setStatus("cancelled", false)
	return m, nil
}

func (m *Model) detailKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	r, ok := m.selectedRequest()
	switch {
	case msg.String() == "ctrl+c":
		return m.quit()
	case key.Matches(msg, m.dkeys.Back) || !ok:
		m.mode = modeNormal
		m.layout()
		return m, nil
	case key.Matches(msg, m.dkeys.Approve):
		m.mode = modeNormal
		m.layout()
		return m, m.approve(r)
	case key.Matches(msg, m.dkeys.Deny):
		m.mode = modeNormal
		m.layout()
		return m, m.startDeny(r)
	}
	var cmd tea.Cmd
	m.detail, cmd = m.detail.Update(msg)
	return m, cmd
}

// confirm asks y/n before do; do runs only on "y".
func (m *Model) confirm(text string, do func() tea.Cmd) {
	m.mode = modeConfirm
	m.confirmText = text
	m.confirmDo = do
	m.layout()
}

// action wraps a blocking call as a command under the action timeout. One
// action runs at a time: actions change bottles, and two at once would
// leave the status line telling half the story.
// waitForBusy says so on the status line when an action is under way, and
// reports whether one is: one action runs at a time (see action).
func (m *Model) waitForBusy() bool {
	if m.busy == "" {
		return false
	}
	m.setStatus(fmt.Sprintf("wait: %s is still under way", m.busy), true)
	return true
}

func (m *Model) action(what string, f func(ctx context.Context) actionMsg) tea.Cmd {
	if m.waitForBusy() {
		return nil
	}
	m.busy = what
	m.setStatus(what+" …", false)
	ctx, d := m.ctx, m.opts.ActionTimeout
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return f(cctx)
	}
}

func (m *Model) approve(r Request) tea.Cmd {
	src := m.src
	return m.action("approving "+r.ID, func(ctx context.Context) actionMsg {
		d, err := src.Approve(ctx, r.ID)
		return decisionStatus("approved", r, d, err)
	})
}

func (m *Model) startDeny(r Request) tea.Cmd {
	if m.waitForBusy() {
		return nil
	}
	m.mode = modeDeny
	m.denying = r.ID
	m.reason.Prompt = fmt.Sprintf("deny %s, reason (the agent is told; enter sends, esc cancels): ", r.ID)
	m.reason.SetValue("")
	m.layout()
	return m.reason.Focus()
}

func (m *Model) deny(id, reason string) tea.Cmd {
	src := m.src
	r := Request{Request: queue.Request{ID: id}}
	for _, x := range m.reqs {
		if x.ID == id {
			r = x
		}
	}
	return m.action("denying "+id, func(ctx context.Context) actionMsg {
		d, err := src.Deny(ctx, id, reason)
		return decisionStatus("denied", r, d, err)
	})
}

// startRevoke asks which credential of b to revoke; revokeKey then asks
// y/n before the lifecycle's revoke runs.
func (m *Model) startRevoke(cs CredentialSource, b lifecycle.Row) tea.Cmd {
	if m.waitForBusy() {
		return nil
	}
	m.mode = modeRevoke
	m.revoking = b.Identity
	m.cred.Prompt = fmt.Sprintf("revoke which credential of %s? (its name; enter asks to confirm, esc cancels): ", b.Identity)
	m.cred.SetValue("")
	m.layout()
	return m.cred.Focus()
}

func (m *Model) revokeKey(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch msg.Type {
	case tea.KeyEsc:
		m.mode = modeNormal
		m.cred.Blur()
		m.setStatus("revoke cancelled", false)
		m.layout()
		return m, nil
	case tea.KeyEnter:
		name := strings.TrimSpace(m.cred.Value())
		if err := sdk.ValidCredentialName(name); err != nil {
			m.setStatus(fmt.Sprintf("not a credential name: %v", err), true)
			return m, nil
		}
		id := m.revoking
		m.cred.Blur()
		cs, _ := m.src.(CredentialSource)
		m.confirm(fmt.Sprintf("revoke credential %s of %s? its proxy stops putting it on the wire from the next request, until the bottle stops (y/n)", name, id),
			func() tea.Cmd { return m.revoke(cs, id, name) })
		return m, nil
	}
	var cmd tea.Cmd
	m.cred, cmd = m.cred.Update(msg)
	return m, cmd
}

func (m *Model) revoke(cs CredentialSource, id, name string) tea.Cmd {
	return m.action("revoking "+name+" of "+id, func(ctx context.Context) actionMsg {
		if err := cs.RevokeCredential(ctx, id, name); err != nil {
			return actionMsg{status: fmt.Sprintf("revoke %s of %s failed: %v", name, id, err), err: true}
		}
		return actionMsg{status: fmt.Sprintf("revoked credential %s of %s; its next request goes out without it", name, id)}
	})
}

func resumeHint(id string) string {
	return fmt.Sprintf("bring %s back with: %s", id, lifecycle.ResumeCommand(id))
}

// decisionStatus says what a decision did, resume hint included.
func decisionStatus(verb string, r Request, d lifecycle.Decision, err error) actionMsg {
	if d.Request.ID == "" {
		if errors.Is(err, queue.ErrAlreadyDecided) {
			return actionMsg{status: fmt.Sprintf("%s was already decided elsewhere: %v", r.ID, err), err: true}
		}
		return actionMsg{status: fmt.Sprintf("%s %s failed: %v", strings.TrimSuffix(verb, "d"), r.ID, err), err: true}
	}
	q := d.Request
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s (%s %s: %s)", verb, q.ID, q.Identity, q.Kind, q.Summary())
	if verb == "denied" && q.DecisionReason != "" {
		fmt.Fprintf(&b, ": %s", q.DecisionReason)
	}
	if d.Preserved {
		fmt.Fprintf(&b, "; %s stops for the rebuild", q.Identity)
	}
	for _, n := range d.Notes {
		fmt.Fprintf(&b, "; %s", n)
	}
	if err != nil {
		fmt.Fprintf(&b, "; but: %v", err)
	}
	msg := actionMsg{status: b.String(), err: err != nil}
	if d.Preserved {
		msg.hint, msg.hintID = resumeHint(q.Identity), q.Identity
	}
	return msg
}

func (m *Model) commit(b lifecycle.Row) tea.Cmd {
	src, id := m.src, b.Identity
	return m.action("committing "+id, func(ctx context.Context) actionMsg {
		ref, err := src.Commit(ctx, id)
		if err != nil {
			return actionMsg{status: fmt.Sprintf("commit %s failed: %v", id, err), err: true}
		}
		return actionMsg{status: fmt.Sprintf("committed %s as %s; it is preserved", id, ref), hint: resumeHint(id) + " (after it stops)", hintID: id}
	})
}

func (m *Model) stop(b lifecycle.Row, preserve bool) func() tea.Cmd {
	return func() tea.Cmd {
		src, id := m.src, b.Identity
		what := "stopping " + id
		if preserve {
			what = "stopping " + id + " (preserved)"
		}
		return m.action(what, func(ctx context.Context) actionMsg {
			if err := src.Stop(ctx, id, preserve); err != nil {
				return actionMsg{status: fmt.Sprintf("stop %s failed: %v", id, err), err: true}
			}
			if preserve {
				return actionMsg{status: fmt.Sprintf("stopped %s, preserved", id), hint: resumeHint(id), hintID: id}
			}
			return actionMsg{status: fmt.Sprintf("stopped %s", id)}
		})
	}
}

// attach hands the terminal to `bot-bottle attach`; bubbletea restores the
// dashboard when it returns (detach or the agent's exit).
func (m *Model) attach(b lifecycle.Row) tea.Cmd {
	if b.Status != sdk.StatusRunning {
		m.setStatus(fmt.Sprintf("%s is %s, not running; resume it with: %s", b.Identity, b.Status, lifecycle.ResumeCommand(b.Identity)), true)
		return nil
	}
	if m.waitForBusy() {
		return nil
	}
	c := m.src.AttachCommand(b.Identity)
	// Keep the last words of attach (detached, exit, an error) for the
	// status line; they would otherwise vanish with the alternate screen.
	tail := &tailWriter{}
	c.Stderr = io.MultiWriter(os.Stderr, tail)
	id := b.Identity
	return tea.ExecProcess(c, func(err error) tea.Msg { return attachDoneMsg{id: id, err: err, tail: tail.last()} })
}

func (m *Model) attachDone(msg attachDoneMsg) {
	if msg.err != nil {
		m.mode = modeAttachFailed
		m.layout()
	}
	var ee *exec.ExitError
	switch {
	case errors.As(msg.err, &ee):
		s := fmt.Sprintf("back from %s: attach exited with status %d", msg.id, ee.ExitCode())
		if msg.tail != "" {
			s += " (" + msg.tail + ")"
		}
		m.setStatus(s, true)
	case msg.err != nil:
		m.setStatus(fmt.Sprintf("attach %s: %v", msg.id, msg.err), true)
	case msg.tail != "":
		m.setStatus(fmt.Sprintf("back from %s: %s", msg.id, msg.tail), false)
	default:
		m.setStatus(fmt.Sprintf("back from %s", msg.id), false)
	}
}

// dropGoneHint forgets a resume hint whose bottle is no longer listed
// (removed elsewhere): it would tell the operator to resume nothing.
func (m *Model) dropGoneHint() {
	if m.hintID == "" || m.bottlesErr != nil {
		return
	}
	for _, b := range m.bottles {
		if b.Identity == m.hintID {
			return
		}
	}
	m.hint, m.hintID = "", ""
}

func (m *Model) setStatus(s string, isErr bool) {
	m.status, m.statusErr, m.statusAt = s, isErr, m.now()
}

// takeLog moves what lifecycle and plugins printed into view: after an
// action, onto its status line (it belongs to the story); otherwise into a
// notice, so that background chatter never hides what the operator did.
func (m *Model) takeLog(afterAction bool) {
	if m.opts.Log == nil {
		return
	}
	lines := m.opts.Log.Drain()
	if len(lines) == 0 {
		return
	}
	if afterAction && m.status != "" {
		m.status += " · " + strings.Join(lines, " · ")
		return
	}
	m.logLine, m.logAt = lines[len(lines)-1], m.now()
}

func (m *Model) setFocus(p pane) {
	m.focus = p
	if p == paneBottles {
		m.bt.Focus()
		m.rt.Blur()
	} else {
		m.rt.Focus()
		m.bt.Blur()
	}
	m.styleTables()
}

func (m *Model) selectedBottle() (lifecycle.Row, bool) {
	i := m.bt.Cursor()
	if i < 0 || i >= len(m.shownBottles) {
		return lifecycle.Row{}, false
	}
	return m.shownBottles[i], true
}

func (m *Model) selectedRequest() (Request, bool) {
	i := m.rt.Cursor()
	if i < 0 || i >= len(m.shownReqs) {
		return Request{}, false
	}
	return m.shownReqs[i], true
}

// rebuild applies the filter and refills the tables, keeping the cursor on
// the same bottle and request when they are still there.
func (m *Model) rebuild() {
	selB, _ := m.selectedBottle()
	selR, _ := m.selectedRequest()
	f := strings.ToLower(strings.TrimSpace(m.filter.Value()))

	m.shownBottles = m.shownBottles[:0]
	for _, b := range m.bottles {
		if f == "" || strings.Contains(strings.ToLower(strings.Join(bottleCells(b, m.now()), " ")), f) {
			m.shownBottles = append(m.shownBottles, b)
		}
	}
	m.shownReqs = m.shownReqs[:0]
	for _, r := range m.reqs {
		if f == "" || strings.Contains(strings.ToLower(strings.Join(requestCells(r, m.now()), " ")+" "+r.Agent), f) {
			m.shownReqs = append(m.shownReqs, r)
		}
	}
	m.layout()
	for i, b := range m.shownBottles {
		if b.Identity == selB.Identity {
			m.bt.SetCursor(i)
		}
	}
	for i, r := range m.shownReqs {
		if r.ID == selR.ID {
			m.rt.SetCursor(i)
		}
	}
	if m.mode == modeDetail {
		if r, ok := m.selectedRequest(); ok && r.ID == selR.ID {
			m.detail.SetContent(m.detailText(r, m.width))
		} else {
			m.mode = modeNormal
		}
	}
}

// tailWriter keeps the last non-empty line written to it.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tailWriter) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(t.buf), "\r", "")), "\n")
	return strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "bot-bottle: ")
}

// reviewKey handles the keys of a --review bottle: the diff at once, and
// apply, merge and discard after a y/n, as the CLI's diff, apply, merge
// and rm do.
func (m *Model) reviewKey(msg tea.KeyMsg, rs ReviewSource, b lifecycle.Row) (tea.Cmd, bool) {
	k, id, repo := m.keys, b.Identity, b.Cwd
	switch {
	case key.Matches(msg, k.ViewDiff):
		return m.action("diffing "+id, func(ctx context.Context) actionMsg {
			d, err := rs.Diff(ctx, id)
			if err != nil {
				return actionMsg{status: fmt.Sprintf("diff %s failed: %v", id, err), err: true}
			}
			text := diffScreen(d)
			return actionMsg{status: fmt.Sprintf("%s: %d file(s) changed on %s", id, len(d.Files), d.Branch), diff: &text}
		}), true
	case key.Matches(msg, k.ApplyWork):
		m.confirm(fmt.Sprintf("apply %s's changes to the working tree of %s, uncommitted? (y/n)", id, repo), func() tea.Cmd {
			return m.action("applying "+id, func(ctx context.Context) actionMsg {
				r, err := rs.ApplyChanges(ctx, id)
				if err != nil {
					return actionMsg{status: fmt.Sprintf("apply %s: %v", id, err), err: true}
				}
				return actionMsg{status: fmt.Sprintf("applied %d file(s) of %s to %s, uncommitted", len(r.Files), id, r.Repo)}
			})
		})
		return nil, true
	case key.Matches(msg, k.MergeWork):
		m.confirm(fmt.Sprintf("merge branch %s into the current branch of %s? (y/n)", b.Review.Branch, repo), func() tea.Cmd {
			return m.action("merging "+id, func(ctx context.Context) actionMsg {
				r, err := rs.Merge(ctx, id)
				if err != nil {
					return actionMsg{status: fmt.Sprintf("merge %s: %v", id, err), err: true}
				}
				if r.Commit == "" {
					return actionMsg{status: fmt.Sprintf("%s is already merged into %s", r.Branch, r.Repo)}
				}
				return actionMsg{status: fmt.Sprintf("merged %s into %s as %.12s", r.Branch, r.Repo, r.Commit)}
			})
		})
		return nil, true
	case key.Matches(msg, k.Discard):
		m.confirm(fmt.Sprintf("discard %s: remove the bottle and its clone? a branch with unmerged commits stays in %s (y/n)", id, repo), func() tea.Cmd {
			return m.action("discarding "+id, func(ctx context.Context) actionMsg {
				res, err := rs.Discard(ctx, id)
				if err != nil {
					return actionMsg{status: fmt.Sprintf("discard %s: %v", id, err), err: true}
				}
				s := "removed " + id
				if res.KeptBranch != nil {
					s += "; " + res.KeptBranch.String()
				}
				return actionMsg{status: s}
			})
		})
		return nil, true
	}
	return nil, false
}

// diffScreen is the full-screen text of a review bottle's diff: a header,
// the stat and the patch, every line escaped (the text is the agent's).
func diffScreen(d review.Diff) string {
	var b strings.Builder
	what := fmt.Sprintf("%d commit(s)", d.Commits)
	if d.Uncommitted {
		what += " and uncommitted changes"
	}
	fmt.Fprintf(&b, "%s · %s from %.12s · %s · esc: back\n\n", d.Identity, d.Branch, d.Base, what)
	b.WriteString(render.Block(d.Stat))
	b.WriteString("\n")
	b.WriteString(render.Block(d.Patch))
	return b.String()
}
