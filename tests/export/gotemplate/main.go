// Renders a TEMPLATE the way Ollama executes one for a chat (template/template.go): Go's text/template
// with missingkey=zero and a `json` function, on a map of System, Messages and an empty Response.
// Reads {"template": ..., "data": {"System": ..., "Messages": [{"Role": ..., "Content": ...}]}} on stdin,
// writes the rendered prompt on stdout, byte for byte.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

// Ollama hands templates *api.Message values; these are the fields its chat templates read.
type Message struct {
	Role    string
	Content string
}

type input struct {
	Template string
	Data     struct {
		System   string
		Messages []*Message
	}
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "input:", err)
		os.Exit(2)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(2)
	}
	data := map[string]any{"System": in.Data.System, "Messages": in.Data.Messages, "Response": ""}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(2)
	}
}
