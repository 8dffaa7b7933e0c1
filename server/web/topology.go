package web

import (
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/server/admin"
)

// topologyFor reads the topology with the sample size the request asks
// for (?sample=N), or the handler's.
func (h *Handler) topologyFor(r *http.Request) (*admin.Topology, error) {
	n := h.sample
	if s := r.URL.Query().Get("sample"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 10_000 {
			return nil, badInput("sample %q: want 1 to 10000 messages per topic", s)
		}
		n = v
	}
	return h.src.Admin.Topology(r.Context(), n)
}

type topologyData struct {
	Topo *admin.Topology
	SVG  template.HTML
	// Sample is how many of each topic's newest messages were read.
	Sample int
}

func (h *Handler) topology(w http.ResponseWriter, r *http.Request) {
	topo, err := h.topologyFor(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := topologyData{Topo: topo, SVG: template.HTML(topologySVG(topo, false)), Sample: h.sample}
	h.render(w, r, "topology", page{Title: "Topology", Nav: "topology", Data: &d})
}

func (h *Handler) topologySVG(w http.ResponseWriter, r *http.Request) {
	topo, err := h.topologyFor(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	_, _ = w.Write([]byte(topologySVG(topo, true)))
}

// Layout of the topology drawing: three columns (services that publish,
// event types on their topics, consumer groups), one box per row.
const (
	svgRow     = 40
	svgBoxH    = 28
	svgCharW   = 7.2
	svgPad     = 12
	svgColGap  = 120
	svgMargin  = 16
	svgMinBoxW = 80
)

type svgNode struct {
	label, sub string
	x, y, w    float64
}

func boxWidth(s string) float64 {
	return max(svgMinBoxW, float64(len(s))*svgCharW+2*svgPad)
}

// topologySVG draws who publishes which event types on which topics and
// which groups consume them. standalone adds an XML header and a style
// sheet (the dashboard's pages style the inline drawing themselves).
func topologySVG(t *admin.Topology, standalone bool) string {
	type typeKey struct{ topic, typ string }
	var sources []string
	var types []typeKey
	var groups []string
	for _, p := range t.Publications {
		src := p.Source
		if src == "" {
			src = "(no source)"
		}
		if !slices.Contains(sources, src) {
			sources = append(sources, src)
		}
		if k := (typeKey{p.Topic, p.Type}); !slices.Contains(types, k) {
			types = append(types, k)
		}
	}
	for _, c := range t.Consumptions {
		if !slices.Contains(groups, c.Group) {
			groups = append(groups, c.Group)
		}
		// A group on a topic with no traffic sampled still shows the topic.
		if !slices.ContainsFunc(types, func(k typeKey) bool { return k.topic == c.Topic }) {
			types = append(types, typeKey{c.Topic, ""})
		}
	}
	slices.Sort(sources)
	slices.Sort(groups)
	slices.SortFunc(types, func(a, b typeKey) int { return strings.Compare(a.topic+"\x00"+a.typ, b.topic+"\x00"+b.typ) })

	col := func(labels []string) (float64, []svgNode) {
		var w float64
		nodes := make([]svgNode, len(labels))
		for i, l := range labels {
			w = max(w, boxWidth(l))
			nodes[i] = svgNode{label: l, y: svgMargin + 24 + float64(i)*svgRow}
		}
		return w, nodes
	}
	srcW, srcNodes := col(sources)
	typeLabels := make([]string, len(types))
	for i, k := range types {
		typeLabels[i] = k.typ
		if k.typ == "" {
			typeLabels[i] = "(no events sampled)"
		}
	}
	typeW, typeNodes := col(typeLabels)
	for i, k := range types {
		typeNodes[i].sub = k.topic
		typeW = max(typeW, boxWidth(k.topic))
	}
	grpW, grpNodes := col(groups)
	x0, x1 := float64(svgMargin), float64(svgMargin)+srcW+svgColGap
	x2 := x1 + typeW + svgColGap
	for i := range srcNodes {
		srcNodes[i].x, srcNodes[i].w = x0, srcW
	}
	for i := range typeNodes {
		typeNodes[i].x, typeNodes[i].w = x1, typeW
	}
	for i := range grpNodes {
		grpNodes[i].x, grpNodes[i].w = x2, grpW
	}
	// The column's heading can be wider than its boxes.
	width := x2 + max(grpW, svgMinBoxW, boxWidth("consumer groups")) + svgMargin
	rows := max(len(sources), len(types), len(groups), 1)
	height := float64(svgMargin) + 24 + float64(rows)*svgRow + svgMargin

	var b strings.Builder
	if standalone {
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="topology" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" role="img" aria-label="topology: %d services, %d event types, %d groups">`,
		width, height, width, height, len(sources), len(types), len(groups))
	if standalone {
		b.WriteString(`<style>text{font:12px system-ui,sans-serif;fill:#1b1f24}.sub{fill:#5b6470;font-size:10px}.box{fill:#f3f5f7;stroke:#8c959f}.edge{fill:none;stroke:#0b5cad;stroke-opacity:.6}.consume{stroke:#1d7a3a}.head{font-weight:600}` +
			`@media (prefers-color-scheme:dark){text{fill:#e3e7eb}.box{fill:#1c2026;stroke:#5b6470}.edge{stroke:#7cb7ff}.consume{stroke:#7ddc97}}</style>`)
	}
	head := func(x float64, s string) {
		fmt.Fprintf(&b, `<text class="head" x="%.1f" y="%d">%s</text>`, x, svgMargin+10, template.HTMLEscapeString(s))
	}
	head(x0, "services (publish)")
	head(x1, "event types · topic")
	head(x2, "consumer groups")
	edge := func(from, to svgNode, class string, title string) {
		ax, ay := from.x+from.w, from.y+svgBoxH/2
		bx, by := to.x, to.y+svgBoxH/2
		mx := (ax + bx) / 2
		fmt.Fprintf(&b, `<path class="edge %s" d="M%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f"><title>%s</title></path>`,
			class, ax, ay, mx, ay, mx, by, bx, by, template.HTMLEscapeString(title))
	}
	for _, p := range t.Publications {
		src := p.Source
		if src == "" {
			src = "(no source)"
		}
		si := slices.Index(sources, src)
		ti := slices.Index(types, typeKey{p.Topic, p.Type})
		edge(srcNodes[si], typeNodes[ti], "publish", fmt.Sprintf("%s publishes %s on %s (%d sampled)", src, p.Type, p.Topic, p.Count))
	}
	for _, c := range t.Consumptions {
		gi := slices.Index(groups, c.Group)
		for ti, k := range types {
			if k.topic == c.Topic {
				edge(typeNodes[ti], grpNodes[gi], "consume", fmt.Sprintf("%s consumes %s (%d pending)", c.Group, c.Topic, c.Pending))
			}
		}
	}
	box := func(n svgNode) {
		fmt.Fprintf(&b, `<g><rect class="box" x="%.1f" y="%.1f" width="%.1f" height="%d" rx="5"/>`, n.x, n.y, n.w, svgBoxH)
		if n.sub == "" {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text></g>`, n.x+svgPad, n.y+svgBoxH/2+4, template.HTMLEscapeString(n.label))
			return
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text><text class="sub" x="%.1f" y="%.1f">%s</text></g>`,
			n.x+svgPad, n.y+12, template.HTMLEscapeString(n.label), n.x+svgPad, n.y+24, template.HTMLEscapeString(n.sub))
	}
	for _, ns := range [][]svgNode{srcNodes, typeNodes, grpNodes} {
		for _, n := range ns {
			box(n)
		}
	}
	b.WriteString(`</svg>`)
	return b.String()
}
