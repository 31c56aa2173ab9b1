package dashboard

import (
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/table"
)

// keyMap is every key of the main screen. Bindings that do not apply to the
// focused pane or the selection are disabled, so the help bar shows only
// what works now.
type keyMap struct {
	Up, Down     key.Binding
	Tab          key.Binding
	Approve      key.Binding
	Deny         key.Binding
	Detail       key.Binding
	Attach       key.Binding
	Commit       key.Binding
	Stop         key.Binding
	StopPreserve key.Binding
	Revoke       key.Binding
	// Of a --review bottle.
	ViewDiff    key.Binding
	ApplyWork   key.Binding
	MergeWork   key.Binding
	Discard     key.Binding
	Filter      key.Binding
	ClearFilter key.Binding
	Help        key.Binding
	Quit        key.Binding
}

func newKeyMap() keyMap {
	return keyMap{
		Up:           key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:         key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		Tab:          key.NewBinding(key.WithKeys("tab", "shift+tab"), key.WithHelp("tab", "switch pane")),
		Approve:      key.NewBinding(key.WithKeys("a"), key.WithHelp("a", "approve")),
		Deny:         key.NewBinding(key.WithKeys("d"), key.WithHelp("d", "deny")),
		Detail:       key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "detail")),
		Attach:       key.NewBinding(key.WithKeys("enter", "t"), key.WithHelp("enter/t", "attach")),
		Commit:       key.NewBinding(key.WithKeys("c"), key.WithHelp("c", "commit")),
		Stop:         key.NewBinding(key.WithKeys("s"), key.WithHelp("s", "stop")),
		StopPreserve: key.NewBinding(key.WithKeys("p"), key.WithHelp("p", "stop+preserve")),
		Revoke:       key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "revoke credential")),
		ViewDiff:     key.NewBinding(key.WithKeys("v"), key.WithHelp("v", "diff")),
		ApplyWork:    key.NewBinding(key.WithKeys("w"), key.WithHelp("w", "apply to worktree")),
		MergeWork:    key.NewBinding(key.WithKeys("m"), key.WithHelp("m", "merge")),
		Discard:      key.NewBinding(key.WithKeys("x"), key.WithHelp("x", "discard (rm)")),
		Filter:       key.NewBinding(key.WithKeys("/"), key.WithHelp("/", "filter")),
		ClearFilter:  key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "clear filter")),
		Help:         key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "more keys")),
		Quit:         key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
	}
}

// ShortHelp implements help.KeyMap.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Tab, k.Approve, k.Deny, k.Detail, k.Attach, k.Commit, k.Stop, k.StopPreserve, k.Revoke,
		k.ViewDiff, k.ApplyWork, k.MergeWork, k.Discard, k.Filter, k.ClearFilter, k.Help, k.Quit}
}

// FullHelp implements help.KeyMap.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.Up, k.Down, k.Tab},
		{k.Approve, k.Deny, k.Detail},
		{k.Attach, k.Commit, k.Stop, k.StopPreserve, k.Revoke},
		{k.ViewDiff, k.ApplyWork, k.MergeWork, k.Discard},
		{k.Filter, k.ClearFilter, k.Help, k.Quit},
	}
}

// detailKeys are the keys of the full-screen request detail.
type detailKeys struct {
	Scroll, Approve, Deny, Back key.Binding
}

func newDetailKeys() detailKeys {
	return detailKeys{
		Scroll:  key.NewBinding(key.WithKeys("up", "down", "k", "j", "pgup", "pgdown"), key.WithHelp("↑/↓/pgup/pgdn", "scroll")),
		Approve: key.NewBinding(key.WithKeys("a"), key.WithHelp("a", "approve")),
		Deny:    key.NewBinding(key.WithKeys("d"), key.WithHelp("d", "deny")),
		Back:    key.NewBinding(key.WithKeys("esc", "enter", "q"), key.WithHelp("esc", "back")),
	}
}

func (k detailKeys) ShortHelp() []key.Binding {
	return []key.Binding{k.Scroll, k.Approve, k.Deny, k.Back}
}

// diffHelp is the help of a review bottle's full-screen diff.
func (k detailKeys) diffHelp() []key.Binding { return []key.Binding{k.Scroll, k.Back} }

func (k detailKeys) FullHelp() [][]key.Binding { return [][]key.Binding{k.ShortHelp()} }

// tableKeys keeps the tables to moving the cursor: their default map
// takes letters (d, u, f, b, g) that mean something else here.
func tableKeys() table.KeyMap {
	return table.KeyMap{
		LineUp:     key.NewBinding(key.WithKeys("up", "k")),
		LineDown:   key.NewBinding(key.WithKeys("down", "j")),
		PageUp:     key.NewBinding(key.WithKeys("pgup")),
		PageDown:   key.NewBinding(key.WithKeys("pgdown")),
		GotoTop:    key.NewBinding(key.WithKeys("home")),
		GotoBottom: key.NewBinding(key.WithKeys("end")),
	}
}
