package web

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	havro "github.com/hamba/avro/v2"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/avro"
)

// decoded is a payload as the event page shows it.
type decoded struct {
	// Text is the payload pretty-printed: JSON as is, Avro decoded by its
	// schema, anything else as a hex dump.
	Text string
	// SchemaID is the registry id of the payload's schema (wire format),
	// 0 when it has none; SchemaType its type; Subjects the subjects that
	// hold it.
	SchemaID   int
	SchemaType schema.Type
	Subjects   []string
	// Note says why the payload could not be decoded.
	Note string
}

// decode reads data in the registry wire format (magic byte 0, schema id,
// body) when it is in it, else shows it as JSON or bytes.
func (h *Handler) decode(data []byte, contentType string) decoded {
	if len(data) < 5 || data[0] != 0 || h.src.Registry == nil || json.Valid(data) {
		return decoded{Text: prettyJSON(data)}
	}
	id := int(binary.BigEndian.Uint32(data[1:5]))
	body := data[5:]
	sch, err := h.src.Registry.SchemaByID(id)
	if err != nil {
		return decoded{Text: prettyJSON(data), Note: fmt.Sprintf("The payload names schema id %d, which the registry does not hold: %v", id, err)}
	}
	d := decoded{SchemaID: id, SchemaType: sch.Type}
	if d.SchemaType == "" {
		d.SchemaType = schema.Avro
	}
	d.Subjects, _ = h.src.Registry.SubjectsByID(id, false)
	switch d.SchemaType {
	case schema.JSON:
		d.Text = prettyJSON(body)
	case schema.Avro:
		p, err := h.src.Registry.Parsed(id)
		if err != nil {
			d.Text, d.Note = describeBinary(body), "The schema does not parse: "+err.Error()
			break
		}
		as, ok := p.(*avro.Schema)
		if !ok {
			d.Text, d.Note = describeBinary(body), fmt.Sprintf("The schema parsed as %T, not Avro.", p)
			break
		}
		var v any
		if err := havro.Unmarshal(as.Avro(), body, &v); err != nil {
			d.Text, d.Note = describeBinary(body), "The payload does not decode with its schema: "+err.Error()
			break
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			d.Text, d.Note = describeBinary(body), "The decoded payload has no JSON form: "+err.Error()
			break
		}
		d.Text = string(b)
	default:
		d.Text, d.Note = describeBinary(body), fmt.Sprintf("%s payloads are shown as bytes; see the schema for their fields.", d.SchemaType)
	}
	return d
}
