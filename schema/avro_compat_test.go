package schema_test

import (
	"testing"

	"github.com/heraldhq/herald/schema"
)

func rec(fields string) string {
	return `{"type":"record","name":"Order","namespace":"shop","fields":[` + fields + `]}`
}

var avroEvolutions = []evolution{
	{name: "add field with default", old: rec(`{"name":"id","type":"string"}`),
		new:      rec(`{"name":"id","type":"string"},{"name":"total","type":"long","default":0}`),
		backward: true, forward: true},
	{name: "add field without default", old: rec(`{"name":"id","type":"string"}`),
		new:      rec(`{"name":"id","type":"string"},{"name":"total","type":"long"}`),
		backward: false, forward: true, msg: `field "total" added without a default`},
	{name: "remove field with default", old: rec(`{"name":"id","type":"string"},{"name":"total","type":"long","default":0}`),
		new:      rec(`{"name":"id","type":"string"}`),
		backward: true, forward: true},
	{name: "remove field without default", old: rec(`{"name":"id","type":"string"},{"name":"total","type":"long"}`),
		new:      rec(`{"name":"id","type":"string"}`),
		backward: true, forward: false, msg: `field "total" removed without a default`},
	{name: "promote int to long", old: rec(`{"name":"n","type":"int"}`), new: rec(`{"name":"n","type":"long"}`),
		backward: true, forward: false, msg: `type changed from "int" to "long"`},
	{name: "demote long to int", old: rec(`{"name":"n","type":"long"}`), new: rec(`{"name":"n","type":"int"}`),
		backward: false, forward: true, msg: `type changed from "long" to "int"`},
	{name: "promote float to double", old: rec(`{"name":"n","type":"float"}`), new: rec(`{"name":"n","type":"double"}`),
		backward: true, forward: false},
	{name: "promote int to double", old: rec(`{"name":"n","type":"int"}`), new: rec(`{"name":"n","type":"double"}`),
		backward: true, forward: false},
	{name: "string to bytes", old: rec(`{"name":"s","type":"string"}`), new: rec(`{"name":"s","type":"bytes"}`),
		backward: true, forward: true},
	{name: "int to string", old: rec(`{"name":"n","type":"int"}`), new: rec(`{"name":"n","type":"string"}`),
		backward: false, forward: false, msg: `type changed from "int" to "string"`},
	{name: "enum symbol added", old: rec(`{"name":"st","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}}`),
		new:      rec(`{"name":"st","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}}`),
		backward: true, forward: false, msg: `symbol "SHIPPED" added`},
	{name: "enum symbol added with reader default", old: rec(`{"name":"st","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","UNKNOWN"],"default":"UNKNOWN"}}`),
		new:      rec(`{"name":"st","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED","UNKNOWN"],"default":"UNKNOWN"}}`),
		backward: true, forward: true},
	{name: "enum symbol removed", old: rec(`{"name":"st","type":{"type":"enum","name":"Status","symbols":["NEW","PAID"]}}`),
		new:      rec(`{"name":"st","type":{"type":"enum","name":"Status","symbols":["NEW"]}}`),
		backward: false, forward: true, msg: `symbol "PAID" removed`},
	{name: "field renamed with alias", old: rec(`{"name":"total","type":"long"}`),
		new:      rec(`{"name":"amount","type":"long","aliases":["total"]}`),
		backward: true, forward: false, msg: `field "total" removed without a default`},
	{name: "record renamed with alias", old: `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}`,
		new:      `{"type":"record","name":"Purchase","aliases":["Order"],"fields":[{"name":"id","type":"string"}]}`,
		backward: true, forward: false, msg: `record name changed from "Order" to "Purchase"`},
	{name: "namespace changed", old: `{"type":"record","name":"Order","namespace":"a","fields":[{"name":"id","type":"string"}]}`,
		new:      `{"type":"record","name":"Order","namespace":"b","fields":[{"name":"id","type":"string"}]}`,
		backward: true, forward: true},
	{name: "field made nullable", old: rec(`{"name":"note","type":"string"}`),
		new:      rec(`{"name":"note","type":["null","string"],"default":null}`),
		backward: true, forward: false, msg: `union branch "null" added`},
	{name: "union branch added", old: rec(`{"name":"v","type":["null","string"]}`),
		new:      rec(`{"name":"v","type":["null","string","int"]}`),
		backward: true, forward: false, msg: `union branch "int" added`},
	{name: "union branch removed", old: rec(`{"name":"v","type":["null","string","int"]}`),
		new:      rec(`{"name":"v","type":["null","string"]}`),
		backward: false, forward: true, msg: `union branch "int" removed`},
	{name: "fixed size changed", old: rec(`{"name":"h","type":{"type":"fixed","name":"Hash","size":16}}`),
		new:      rec(`{"name":"h","type":{"type":"fixed","name":"Hash","size":32}}`),
		backward: false, forward: false, msg: `size changed from 16 to 32`},
	{name: "array items promoted", old: rec(`{"name":"xs","type":{"type":"array","items":"int"}}`),
		new:      rec(`{"name":"xs","type":{"type":"array","items":"long"}}`),
		backward: true, forward: false},
	{name: "map values changed", old: rec(`{"name":"m","type":{"type":"map","values":"string"}}`),
		new:      rec(`{"name":"m","type":{"type":"map","values":"int"}}`),
		backward: false, forward: false, msg: "Order.m{}"},
	{name: "nested field added without default",
		old:      rec(`{"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"name","type":"string"}]}}`),
		new:      rec(`{"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"name","type":"string"},{"name":"email","type":"string"}]}}`),
		backward: false, forward: true, msg: `field "email" added without a default at Order.customer.email`},
	{name: "recursive type gains field with default",
		old:      `{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}`,
		new:      `{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"],"default":null},{"name":"w","type":"int","default":1}]}`,
		backward: true, forward: true},
	{name: "identical", old: rec(`{"name":"id","type":"string"}`), new: rec(`{"name":"id","type":"string"}`),
		backward: true, forward: true},
}

func TestAvroEvolution(t *testing.T) {
	t.Parallel()
	runEvolutions(t, schema.Avro, avroEvolutions)
}
