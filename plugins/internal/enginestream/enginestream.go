// Package enginestream reads the JSON message streams the Docker Engine
// answers build, pull and load requests with, and turns the first error the
// engine reports in them into a one-line Go error.
package enginestream

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// Message is one line of an engine stream.
type Message struct {
	Stream         string                    `json:"stream"`
	Status         string                    `json:"status"`
	ID             string                    `json:"id"`
	Error          string                    `json:"error"`
	ErrorDetail    *struct{ Message string } `json:"errorDetail"`
	Aux            json.RawMessage           `json:"aux"`
	ProgressDetail struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
}

// Read decodes r, calling fn for each message, until the stream ends or the
// engine reports an error, which it returns on one line.
func Read(r io.Reader, fn func(Message)) error {
	dec := json.NewDecoder(r)
	for {
		var m Message
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read engine output: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(OneLine(m.ErrorDetail.Message))
		}
		if m.Error != "" {
			return errors.New(OneLine(m.Error))
		}
		fn(m)
	}
}

// ImageID is the image id a build stream reports in its aux message, or "".
func (m Message) ImageID() string {
	if m.Aux == nil {
		return ""
	}
	var aux struct{ ID string }
	if json.Unmarshal(m.Aux, &aux) != nil {
		return ""
	}
	return aux.ID
}

// OneLine joins the non-empty lines of an engine message with "; ".
func OneLine(s string) string { return render.OneLine(s) }
