package schema_test

import (
	"testing"

	"github.com/heraldhq/herald/schema"
)

func obj(props string, extra string) string {
	s := `{"type":"object","properties":{` + props + `}`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

var jsonEvolutions = []evolution{
	{name: "property added to open model", old: obj(`"id":{"type":"string"}`, ""),
		new:      obj(`"id":{"type":"string"},"total":{"type":"number"}`, ""),
		backward: false, forward: true, msg: `property "total" added while the content model is open`},
	{name: "property added to closed model", old: obj(`"id":{"type":"string"}`, `"additionalProperties":false`),
		new:      obj(`"id":{"type":"string"},"total":{"type":"number"}`, `"additionalProperties":false`),
		backward: true, forward: false, msg: `property "total" added while the content model is closed`},
	{name: "property removed from open model", old: obj(`"id":{"type":"string"},"total":{"type":"number"}`, ""),
		new:      obj(`"id":{"type":"string"}`, ""),
		backward: true, forward: false, msg: `property "total" removed while the content model is open`},
	{name: "property removed from closed model", old: obj(`"id":{"type":"string"},"total":{"type":"number"}`, `"additionalProperties":false`),
		new:      obj(`"id":{"type":"string"}`, `"additionalProperties":false`),
		backward: false, forward: true, msg: `property "total" removed while the content model is closed`},
	{name: "required property added", old: obj(`"id":{"type":"string"},"total":{"type":"number"}`, `"required":["id"]`),
		new:      obj(`"id":{"type":"string"},"total":{"type":"number"}`, `"required":["id","total"]`),
		backward: false, forward: true, msg: `required property "total" added`},
	{name: "required property dropped", old: obj(`"id":{"type":"string"}`, `"required":["id"]`),
		new:      obj(`"id":{"type":"string"}`, ""),
		backward: true, forward: false, msg: `required property "id" removed`},
	{name: "maxLength tightened", old: obj(`"id":{"type":"string","maxLength":20}`, ""),
		new:      obj(`"id":{"type":"string","maxLength":10}`, ""),
		backward: false, forward: true, msg: `maxLength tightened from 20 to 10 at #/properties/id`},
	{name: "maxLength loosened", old: obj(`"id":{"type":"string","maxLength":10}`, ""),
		new:      obj(`"id":{"type":"string","maxLength":20}`, ""),
		backward: true, forward: false, msg: `maxLength loosened from 10 to 20`},
	{name: "integer widened to number", old: obj(`"n":{"type":"integer"}`, ""), new: obj(`"n":{"type":"number"}`, ""),
		backward: true, forward: false, msg: `type changed from [integer] to [number]`},
	{name: "string to integer", old: obj(`"n":{"type":"string"}`, ""), new: obj(`"n":{"type":"integer"}`, ""),
		backward: false, forward: false, msg: `type changed from [string] to [integer]`},
	{name: "enum value added", old: obj(`"s":{"enum":["NEW","PAID"]}`, ""), new: obj(`"s":{"enum":["NEW","PAID","SHIPPED"]}`, ""),
		backward: true, forward: false, msg: `enum value "SHIPPED" added`},
	{name: "enum value removed", old: obj(`"s":{"enum":["NEW","PAID"]}`, ""), new: obj(`"s":{"enum":["NEW"]}`, ""),
		backward: false, forward: true, msg: `enum value "PAID" removed`},
	{name: "minimum raised", old: obj(`"n":{"type":"number","minimum":0}`, ""), new: obj(`"n":{"type":"number","minimum":10}`, ""),
		backward: false, forward: true, msg: `minimum tightened from 0 to 10`},
	{name: "pattern added", old: obj(`"sku":{"type":"string"}`, ""), new: obj(`"sku":{"type":"string","pattern":"^[A-Z]+$"}`, ""),
		backward: false, forward: true, msg: `pattern "^[A-Z]+$" added`},
	{name: "content model opened", old: obj(`"id":{"type":"string"}`, `"additionalProperties":false`),
		new:      obj(`"id":{"type":"string"}`, ""),
		backward: true, forward: false, msg: `content model closed`},
	{name: "array items changed", old: obj(`"xs":{"type":"array","items":{"type":"string"}}`, ""),
		new:      obj(`"xs":{"type":"array","items":{"type":"integer"}}`, ""),
		backward: false, forward: false, msg: `#/properties/xs/items`},
	{name: "maxItems added", old: obj(`"xs":{"type":"array"}`, ""), new: obj(`"xs":{"type":"array","maxItems":3}`, ""),
		backward: false, forward: true, msg: `maxItems tightened from none to 3`},
	{name: "oneOf branch added", old: obj(`"v":{"oneOf":[{"type":"string"},{"type":"integer"}]}`, ""),
		new:      obj(`"v":{"oneOf":[{"type":"string"},{"type":"integer"},{"type":"boolean"}]}`, ""),
		backward: true, forward: false, msg: `no branch of the reader's oneOf`},
	{name: "required added behind $ref",
		old:      `{"type":"object","properties":{"c":{"$ref":"#/definitions/C"}},"definitions":{"C":{"type":"object","properties":{"name":{"type":"string"}}}}}`,
		new:      `{"type":"object","properties":{"c":{"$ref":"#/definitions/C"}},"definitions":{"C":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}`,
		backward: false, forward: true, msg: `required property "name" added at #/properties/c/required`},
	{name: "recursive schema, description only",
		old:      `{"type":"object","properties":{"v":{"type":"integer"},"next":{"$ref":"#"}}}`,
		new:      `{"description":"a list","type":"object","properties":{"v":{"type":"integer"},"next":{"$ref":"#"}}}`,
		backward: true, forward: true},
	{name: "null allowed", old: obj(`"note":{"type":"string"}`, ""), new: obj(`"note":{"type":["string","null"]}`, ""),
		backward: true, forward: false, msg: `type changed from [string] to [null, string]`},
	{name: "identical", old: obj(`"id":{"type":"string"}`, `"required":["id"]`), new: obj(`"id":{"type":"string"}`, `"required":["id"]`),
		backward: true, forward: true},
}

func TestJSONSchemaEvolution(t *testing.T) {
	t.Parallel()
	runEvolutions(t, schema.JSON, jsonEvolutions)
}
