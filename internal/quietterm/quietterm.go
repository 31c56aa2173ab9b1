// Package quietterm keeps bot-bottle from querying the user's terminal when
// it starts. bubbletea's init asks lipgloss for the terminal's background
// colour, and lipgloss asks the terminal (an OSC 11 query): in every
// bot-bottle command, not only the dashboard, that writes escape codes to
// the terminal, waits for an answer (seconds on a terminal or pty that
// gives none) and eats keys typed meanwhile. Importing this package settles
// the answer first, so nobody asks.
//
// It works by initialisation order: Go (1.21 on) initialises, among the
// packages whose imports are done, the one with the smallest import path
// first, and this path sorts before github.com/charmbracelet/bubbletea. A
// test in cmd/bot-bottle runs the binary on a pty that never answers and
// fails if a query appears.
package quietterm

import "github.com/charmbracelet/lipgloss"

func init() {
	// The dashboard's own colours do not depend on it; the bubbles'
	// adaptive defaults pick their dark variants.
	lipgloss.SetHasDarkBackground(true)
}
