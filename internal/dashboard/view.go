package dashboard

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/table"
	"github.com/charmbracelet/lipgloss"
	"github.com/mattn/go-runewidth"

	"github.com/bot-bottle/bot-bottle/internal/lifecycle"
	"github.com/bot-bottle/bot-bottle/internal/queue"
	"github.com/bot-bottle/bot-bottle/internal/reqview"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

var (
	titleStyle   = lipgloss.NewStyle().Bold(true)
	focusStyle   = lipgloss.NewStyle().Bold(true).Reverse(true)
	dimStyle     = lipgloss.NewStyle().Faint(true)
	warnStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("3"))
	errStyle     = lipgloss.NewStyle().Foreground(lipgloss.Color("1")).Bold(true)
	okStyle      = lipgloss.NewStyle().Foreground(lipgloss.Color("2"))
	addStyle     = lipgloss.NewStyle().Foreground(lipgloss.Color("2"))
	delStyle     = lipgloss.NewStyle().Foreground(lipgloss.Color("1"))
	hunkStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("6"))
	markStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("3")).Bold(true)
	reasonStyle  = lipgloss.NewStyle().Italic(true)
	headerStyle  = lipgloss.NewStyle().Bold(true).Padding(0, 1)
	cellStyle    = lipgloss.NewStyle().Padding(0, 1)
	selFocused   = lipgloss.NewStyle().Reverse(true)
	selUnfocused = lipgloss.NewStyle().Bold(true)
)

// logShown is how long a line the core or a plugin printed stays on screen.
const logShown = 30 * time.Second

// statusLines is the height of the status line: a resume hint after a long
// decision summary must not be cut off.
const statusLines = 2

var bottleHeaders = []string{"IDENTITY", "AGENT", "BACKEND", "STATUS", "UPTIME", "CWD", "PRESERVED", "IMAGE", "EGRESS"}

func bottleCells(b lifecycle.Row, now time.Time) []string {
	preserved := ""
	if b.Preserved {
		preserved = "yes"
	}
	cwd := b.Cwd
	if cwd != "" && b.CopyCwd {
		cwd += " (copy)"
	}
	return []string{render.Text(b.Identity), render.Text(b.Agent), render.Text(b.Backend), render.Text(b.Status),
		uptime(b, now), dashIfEmpty(render.Text(cwd)), preserved,
		dashIfEmpty(render.Text(b.CommittedImage)), dashIfEmpty(render.Text(strings.Join(b.Egress, ",")))}
}

var requestHeaders = []string{"REQUEST", "BOTTLE", "KIND", "WHAT", "REASON", "AGE"}

func requestCells(r Request, now time.Time) []string {
	return []string{render.Text(r.ID), render.Text(r.Identity), render.Text(string(r.Kind)), render.Text(r.Summary()),
		render.Quoted(r.Reason), age(r.CreatedAt, now)}
}

func bottleColumns(width int, rows []lifecycle.Row, now time.Time) []table.Column {
	cells := make([][]string, len(rows))
	for i, r := range rows {
		cells[i] = bottleCells(r, now)
	}
	// CWD, IMAGE and EGRESS give way first; they are the long ones.
	return fitColumns(bottleHeaders, cells, width, []int{5, 7, 8})
}

func requestColumns(width int, reqs []Request, now time.Time) []table.Column {
	cells := make([][]string, len(reqs))
	for i, r := range reqs {
		cells[i] = requestCells(r, now)
	}
	return fitColumns(requestHeaders, cells, width, []int{3, 4})
}

// fitColumns sizes columns to their content and shrinks the flexible ones
// (widest first) until the table fits width.
func fitColumns(headers []string, rows [][]string, width int, flex []int) []table.Column {
	const maxCol, minFlex = 60, 8
	w := make([]int, len(headers))
	for i, h := range headers {
		w[i] = runewidth.StringWidth(h)
	}
	for _, r := range rows {
		for i, c := range r {
			w[i] = max(w[i], min(runewidth.StringWidth(c), maxCol))
		}
	}
	total := func() int {
		t := 0
		for _, x := range w {
			t += x + 2 // cell padding
		}
		return t
	}
	for total() > width {
		widest := -1
		for _, i := range flex {
			if w[i] > minFlex && (widest < 0 || w[i] > w[widest]) {
				widest = i
			}
		}
		if widest < 0 {
			break
		}
		w[widest]--
	}
	cols := make([]table.Column, len(headers))
	for i, h := range headers {
		cols[i] = table.Column{Title: h, Width: w[i]}
	}
	return cols
}

func (m *Model) styleTables() {
	for _, t := range []*table.Model{&m.bt, &m.rt} {
		s := table.Styles{Header: headerStyle, Cell: cellStyle, Selected: selUnfocused}
		if t.Focused() {
			s.Selected = selFocused
		}
		t.SetStyles(s)
	}
}

// layout sizes the tables and the detail to the window: the two tables
// take what their rows need up to two fifths each, the request detail the
// rest.
func (m *Model) layout() {
	now := m.now()
	m.bt.SetColumns(bottleColumns(m.width, m.shownBottles, now))
	m.rt.SetColumns(requestColumns(m.width, m.shownReqs, now))
	br := make([]table.Row, len(m.shownBottles))
	for i, b := range m.shownBottles {
		br[i] = bottleCells(b, now)
	}
	m.bt.SetRows(br)
	rr := make([]table.Row, len(m.shownReqs))
	for i, r := range m.shownReqs {
		rr[i] = requestCells(r, now)
	}
	m.rt.SetRows(rr)
	if m.bt.Cursor() < 0 && len(br) > 0 {
		m.bt.SetCursor(0)
	}
	if m.rt.Cursor() < 0 && len(rr) > 0 {
		m.rt.SetCursor(0)
	}
	m.bt.SetWidth(m.width)
	m.rt.SetWidth(m.width)
	m.help.Width = m.width

	rem := m.height - m.fixedLines()
	share := max(1, rem*2/5-1)
	m.bt.SetHeight(min(max(1, len(br)), share) + 1)
	m.rt.SetHeight(min(max(1, len(rr)), share) + 1)
	m.detail.Width = m.width
	m.detail.Height = max(1, m.height-1-statusLines-m.bottomLines())
}

// fixedLines counts the lines of the main screen that are not table rows
// or detail.
func (m *Model) fixedLines() int {
	return 1 + 1 + len(m.noticeLines()) + 1 + 1 + statusLines + m.bottomLines()
}

func (m *Model) bottomLines() int {
	switch m.mode {
	case modeFilter, modeDeny, modeRevoke, modeConfirm:
		return 1
	}
	if m.fullHelp {
		return 4
	}
	return 1
}

// noticeLines are the warnings under the bottles: unreachable backends and
// errors reading state or requests.
func (m *Model) noticeLines() []string {
	var out []string
	for _, w := range m.warnings {
		out = append(out, "! "+oneLine(w.Error()))
	}
	if m.bottlesErr != nil {
		out = append(out, "! bottles: "+oneLine(m.bottlesErr.Error()))
	}
	if m.reqsErr != nil {
		out = append(out, "! requests: "+oneLine(m.reqsErr.Error()))
	}
	if m.logLine != "" && m.now().Sub(m.logAt) < logShown {
		out = append(out, "· "+oneLine(m.logLine))
	}
	if len(out) > 3 {
		out = append(out[:2], fmt.Sprintf("! … and %d more", len(out)-2))
	}
	return out
}

// View implements tea.Model.
func (m *Model) View() string {
	var lines []string
	add := func(s string) { lines = append(lines, strings.Split(s, "\n")...) }
	add(m.headerLine())
	if m.mode == modeDetail || m.mode == modeDiff {
		add(m.detail.View())
	} else {
		add(m.paneTitle(paneBottles, "Bottles", len(m.shownBottles), len(m.bottles)))
		switch {
		case !m.bottlesLoaded:
			add(dimStyle.Render("  asking the backends …"))
		case len(m.shownBottles) == 0:
			add(dimStyle.Render("  no bottles" + m.filteredNote()))
		default:
			add(m.bt.View())
		}
		for _, n := range m.noticeLines() {
			add(warnStyle.Render(n))
		}
		add(m.paneTitle(paneRequests, "Pending requests", len(m.shownReqs), len(m.reqs)))
		switch {
		case !m.reqsLoaded:
			add(dimStyle.Render("  reading requests …"))
		case len(m.shownReqs) == 0:
			add(dimStyle.Render("  no pending requests" + m.filteredNote()))
		default:
			add(m.rt.View())
		}
		add(m.detailPreview())
	}
	body := m.fit(lines, m.height-statusLines-m.bottomLines())
	return strings.Join(append(append(body, m.statusView()...), m.bottomView()), "\n")
}

// fit cuts or pads lines to exactly n, each no wider than the window, so
// the screen never scrolls and every frame covers the last.
func (m *Model) fit(lines []string, n int) []string {
	trunc := lipgloss.NewStyle().MaxWidth(m.width)
	out := make([]string, 0, n)
	for _, l := range lines {
		if len(out) == n {
			break
		}
		out = append(out, trunc.Render(l))
	}
	for len(out) < n {
		out = append(out, "")
	}
	return out
}

func (m *Model) headerLine() string {
	n := 0
	for _, b := range m.bottles {
		if b.Status == sdk.StatusRunning {
			n++
		}
	}
	s := fmt.Sprintf("bot-bottle dashboard · %s (%d running) · %s · %s",
		plural(len(m.bottles), "bottle"), n, plural(len(m.reqs), "pending request"), m.now().Format("15:04:05"))
	if f := m.filter.Value(); f != "" && m.mode != modeFilter {
		s += fmt.Sprintf(" · filter %q", f)
	}
	if m.busy != "" {
		s += " · " + m.busy + " …"
	}
	return titleStyle.Render(s)
}

func (m *Model) paneTitle(p pane, name string, shown, total int) string {
	t := name
	if shown != total {
		t += fmt.Sprintf(" (%d of %d)", shown, total)
	}
	if m.focus == p {
		return focusStyle.Render(" " + t + " ")
	}
	return titleStyle.Render(" " + t + " ")
}

func (m *Model) filteredNote() string {
	if m.filter.Value() != "" {
		return " match the filter"
	}
	return ""
}

// detailPreview is the selected request's detail, as much as fits.
func (m *Model) detailPreview() string {
	r, ok := m.selectedRequest()
	if !ok {
		return ""
	}
	title := titleStyle.Render(" Request "+r.ID+" ") + dimStyle.Render(" (enter: full view)")
	rem := m.height - m.fixedLines() - m.bt.Height() - 1 - m.rt.Height() - 1
	if rem < 1 {
		return title
	}
	// The facts come first and are cut, never reordered, when the pane is
	// short; the reason comes last, folded to what is left.
	body := m.facts(r, true)
	if room := rem - len(body); room >= 2 {
		body = append(body, m.reasonLines(r, m.width, room)...)
	}
	if len(body) > rem {
		body = append(body[:rem-1], dimStyle.Render(fmt.Sprintf("… %d more lines (enter: scroll the whole request)", len(body)-rem+1)))
	}
	return title + "\n" + strings.Join(body, "\n")
}

var viewStyles = reqview.Styles{
	Title: titleStyle.Render, Label: dimStyle.Render, File: titleStyle.Render, Hunk: hunkStyle.Render,
	Add: addStyle.Render, Del: delStyle.Render, Marked: markStyle.Render, Reason: reasonStyle.Render,
}

// facts are the request's facts, and for an egress request what the bottle
// is allowed now.
func (m *Model) facts(r Request, changesOnly bool) []string {
	out := reqview.Facts(r, m.now(), viewStyles, changesOnly)
	if r.Kind == queue.KindEgress {
		for _, row := range m.bottles {
			if row.Identity == r.Identity {
				out = append(out, dimStyle.Render("allowed now:")+" "+dashIfEmpty(render.Text(strings.Join(row.Egress, ", "))))
			}
		}
	}
	return out
}

// reasonLines is the reason under its title, folded to at most room lines
// (0: all of it).
func (m *Model) reasonLines(r Request, width, room int) []string {
	fold := 0
	if room > 0 {
		fold = max(1, room-1)
	}
	return append([]string{dimStyle.Render(reqview.ReasonTitle(r.Reason))}, reqview.Reason(r.Reason, width, fold, viewStyles)...)
}

// detailText is everything about one request an operator needs to decide:
// the facts with the whole diff, then the whole reason.
func (m *Model) detailText(r Request, width int) string {
	return strings.Join(append(m.facts(r, false), m.reasonLines(r, width, 0)...), "\n")
}

// statusView is what just happened, and on a line of its own the resume
// hint of the last action that left a bottle to resume.
func (m *Model) statusView() []string {
	// The status carries summaries, reasons and the tail of a bottle's
	// terminal: escaped, like everything else from inside a bottle.
	s := oneLine(m.status)
	if s == "" {
		s = "ready"
	}
	if !m.statusAt.IsZero() {
		s = m.statusAt.Format("15:04:05") + " " + s
	}
	style := okStyle
	if m.statusErr {
		style = errStyle
	}
	room := statusLines
	if m.hint != "" {
		room--
	}
	wrapped := strings.Split(lipgloss.NewStyle().Width(max(20, m.width)).Render(s), "\n")
	if len(wrapped) > room {
		wrapped = wrapped[:room]
		last := strings.TrimRight(wrapped[room-1], " ")
		wrapped[room-1] = runewidth.Truncate(last, max(1, m.width-2), "") + " …"
	}
	out := make([]string, 0, statusLines)
	for _, l := range wrapped {
		out = append(out, style.Render(strings.TrimRight(l, " ")))
	}
	if m.hint != "" {
		out = append(out, titleStyle.Render("→ "+oneLine(m.hint)))
	}
	for len(out) < statusLines {
		out = append(out, "")
	}
	return out
}

func (m *Model) bottomView() string {
	switch m.mode {
	case modeFilter:
		return m.filter.View()
	case modeDeny:
		return m.reason.View()
	case modeRevoke:
		return m.cred.View()
	case modeConfirm:
		return warnStyle.Render(m.confirmText)
	case modeDetail:
		return m.help.ShortHelpView(m.dkeys.ShortHelp())
	case modeDiff:
		return m.help.ShortHelpView(m.dkeys.diffHelp())
	case modeAttachFailed:
		return warnStyle.Render("the attach failed (above); what was typed since is ignored. esc: back to the dashboard")
	}
	m.enableKeys()
	if m.fullHelp {
		return m.help.FullHelpView(m.keys.FullHelp())
	}
	return m.help.ShortHelpView(m.keys.ShortHelp())
}

// enableKeys turns on the bindings that apply to the focus and selection.
func (m *Model) enableKeys() {
	_, hasReq := m.selectedRequest()
	_, hasBottle := m.selectedBottle()
	onReq := m.focus == paneRequests && hasReq
	onBottle := m.focus == paneBottles && hasBottle
	m.keys.Approve.SetEnabled(onReq)
	m.keys.Deny.SetEnabled(onReq)
	m.keys.Detail.SetEnabled(onReq)
	m.keys.Attach.SetEnabled(onBottle)
	m.keys.Commit.SetEnabled(onBottle)
	m.keys.Stop.SetEnabled(onBottle)
	m.keys.StopPreserve.SetEnabled(onBottle)
	b, _ := m.selectedBottle()
	_, canRevoke := m.src.(CredentialSource)
	m.keys.Revoke.SetEnabled(onBottle && canRevoke && b.Status == sdk.StatusRunning)
	_, canReview := m.src.(ReviewSource)
	onReview := onBottle && canReview && b.Review != nil
	m.keys.ViewDiff.SetEnabled(onReview)
	m.keys.ApplyWork.SetEnabled(onReview)
	m.keys.MergeWork.SetEnabled(onReview)
	m.keys.Discard.SetEnabled(onReview)
	m.keys.ClearFilter.SetEnabled(m.filter.Value() != "")
}

func uptime(b lifecycle.Row, now time.Time) string {
	if b.Status != sdk.StatusRunning || b.StartedAt == "" {
		return "-"
	}
	t, err := time.Parse(time.RFC3339, b.StartedAt)
	if err != nil {
		return "-"
	}
	return short(now.Sub(t))
}

func age(t, now time.Time) string { return reqview.Age(t, now) }

func short(d time.Duration) string { return reqview.Short(d) }

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return render.OneLine(s) }
