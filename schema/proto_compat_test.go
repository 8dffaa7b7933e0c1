package schema_test

import (
	"testing"

	"github.com/heraldhq/herald/schema"
)

func proto3(body string) string {
	return "syntax = \"proto3\";\npackage shop;\n" + body
}

var protoEvolutions = []evolution{
	{name: "field added", old: proto3(`message Order { string id = 1; }`),
		new:      proto3(`message Order { string id = 1; int64 total = 2; }`),
		backward: true, forward: true},
	{name: "field removed", old: proto3(`message Order { string id = 1; int64 total = 2; }`),
		new:      proto3(`message Order { string id = 1; }`),
		backward: true, forward: true},
	{name: "field renamed", old: proto3(`message Order { string id = 1; }`), new: proto3(`message Order { string order_id = 1; }`),
		backward: true, forward: true},
	{name: "field number changed", old: proto3(`message Order { string id = 1; }`), new: proto3(`message Order { string id = 2; }`),
		backward: true, forward: true},
	{name: "int32 to int64", old: proto3(`message Order { int32 n = 1; }`), new: proto3(`message Order { int64 n = 1; }`),
		backward: true, forward: true},
	{name: "int32 to sint32", old: proto3(`message Order { int32 n = 1; }`), new: proto3(`message Order { sint32 n = 1; }`),
		backward: false, forward: false, msg: `field "n" (1) type changed from int32 to sint32, which is not wire-compatible`},
	{name: "string to bytes", old: proto3(`message Order { string s = 1; }`), new: proto3(`message Order { bytes s = 1; }`),
		backward: true, forward: true},
	{name: "string to int32", old: proto3(`message Order { string s = 1; }`), new: proto3(`message Order { int32 s = 1; }`),
		backward: false, forward: false, msg: `type changed from string to int32`},
	{name: "fixed32 to sfixed32", old: proto3(`message Order { fixed32 n = 1; }`), new: proto3(`message Order { sfixed32 n = 1; }`),
		backward: true, forward: true},
	{name: "message type changed", old: proto3(`message A { string x = 1; } message B { string y = 1; } message Order { A part = 1; }`),
		new:      proto3(`message A { string x = 1; } message B { string y = 1; } message Order { B part = 1; }`),
		backward: false, forward: false, msg: `field "part" (1) message type changed from A to B at Order.part`},
	{name: "message removed", old: proto3(`message Order { string id = 1; } message Line { string sku = 1; }`),
		new:      proto3(`message Order { string id = 1; }`),
		backward: false, forward: true, msg: `message "Line" removed`},
	{name: "message added", old: proto3(`message Order { string id = 1; }`),
		new:      proto3(`message Order { string id = 1; } message Line { string sku = 1; }`),
		backward: true, forward: false, msg: `message "Line" added`},
	{name: "singular to repeated", old: proto3(`message Order { int64 n = 1; }`), new: proto3(`message Order { repeated int64 n = 1; }`),
		backward: false, forward: false, msg: `changed from singular to repeated`},
	{name: "two fields moved into a new oneof", old: proto3(`message Order { string a = 1; string b = 2; }`),
		new:      proto3(`message Order { oneof choice { string a = 1; string b = 2; } }`),
		backward: false, forward: true, msg: `fields a, b moved into one new oneof "choice"`},
	{name: "one field moved into a new oneof", old: proto3(`message Order { string a = 1; string b = 2; }`),
		new:      proto3(`message Order { oneof choice { string a = 1; } string b = 2; }`),
		backward: true, forward: true},
	{name: "field moved into an existing oneof", old: proto3(`message Order { oneof choice { string a = 1; } string b = 2; }`),
		new:      proto3(`message Order { oneof choice { string a = 1; string b = 2; } }`),
		backward: false, forward: true, msg: `moved into the existing oneof "choice"`},
	{name: "package changed", old: proto3(`message Order { string id = 1; }`),
		new:      "syntax = \"proto3\";\npackage billing;\nmessage Order { string id = 1; }",
		backward: false, forward: false, msg: `package changed from "shop" to "billing"`},
	{name: "proto2 required field added", old: "syntax = \"proto2\";\nmessage Order { optional string id = 1; }",
		new:      "syntax = \"proto2\";\nmessage Order { optional string id = 1; required int64 total = 2; }",
		backward: false, forward: true, msg: `required field "total" (2) added`},
	{name: "enum type changed", old: proto3(`enum S { S_NEW = 0; } enum T { T_NEW = 0; } message Order { S s = 1; }`),
		new:      proto3(`enum S { S_NEW = 0; } enum T { T_NEW = 0; } message Order { T s = 1; }`),
		backward: false, forward: false, msg: `enum type changed from S to T`},
	{name: "open enum value added", old: proto3(`enum S { S_NEW = 0; } message Order { S s = 1; }`),
		new:      proto3(`enum S { S_NEW = 0; S_PAID = 1; } message Order { S s = 1; }`),
		backward: true, forward: true},
	{name: "closed enum value removed", old: "syntax = \"proto2\";\nenum S { NEW = 0; PAID = 1; }\nmessage Order { optional S s = 1; }",
		new:      "syntax = \"proto2\";\nenum S { NEW = 0; }\nmessage Order { optional S s = 1; }",
		backward: false, forward: true, msg: `closed enum "S" value PAID = 1 removed`},
	{name: "nested message field changed", old: proto3(`message Order { message Line { string sku = 1; } Line line = 1; }`),
		new:      proto3(`message Order { message Line { int32 sku = 1; } Line line = 1; }`),
		backward: false, forward: false, msg: `at Order.Line.sku`},
	{name: "map value changed", old: proto3(`message Order { map<string, string> tags = 1; }`),
		new:      proto3(`message Order { map<string, int32> tags = 1; }`),
		backward: false, forward: false, msg: `Order.tags.value`},
	{name: "identical", old: proto3(`message Order { string id = 1; }`), new: proto3(`message Order { string id = 1; }`),
		backward: true, forward: true},
}

func TestProtobufEvolution(t *testing.T) {
	t.Parallel()
	runEvolutions(t, schema.Protobuf, protoEvolutions)
}
