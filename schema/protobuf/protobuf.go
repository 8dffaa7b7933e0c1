// Package protobuf parses Protobuf schemas (.proto source) for the
// registry with github.com/bufbuild/protocompile, and checks whether data
// written with one schema can be read with another by the wire rules of
// Protocol Buffers: field numbers identify fields, scalar types are
// interchangeable only within a wire group, message and enum types must
// keep their names, fields may not be folded into an existing oneof or
// several at once into a new one, proto2 required fields may not appear,
// and messages may not disappear (the Confluent wire format addresses a
// message by its position in the file).
package protobuf

import (
	"context"
	"fmt"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// mainFile is the name the schema being parsed gets among its imports.
const mainFile = "herald/registry/schema.proto"

// Schema is a compiled .proto file. It is immutable and safe for
// concurrent use.
type Schema struct {
	file linker.File
	text string
}

// Parse compiles text. Each ref is a file the schema imports: Name is the
// import path, Text its source. google/protobuf/*.proto well-known imports
// are built in.
func Parse(text string, refs ...Ref) (*Schema, error) {
	files := make(map[string]string, len(refs)+1)
	for _, r := range refs {
		files[r.Name] = r.Text
	}
	files[mainFile] = text
	c := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			Accessor: protocompile.SourceAccessorFromMap(files),
		}),
		MaxParallelism: 1,
	}
	fds, err := compile(c)
	if err != nil {
		return nil, fmt.Errorf("protobuf: %w", err)
	}
	return &Schema{file: fds[0], text: text}, nil
}

func compile(c protocompile.Compiler) (fds linker.Files, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cannot compile schema: %v", p)
		}
	}()
	return c.Compile(context.Background(), mainFile)
}

// File returns the file descriptor.
func (s *Schema) File() protoreflect.FileDescriptor { return s.file }

// Text returns the schema text as given to Parse.
func (s *Schema) Text() string { return s.text }

// Normalize returns text trimmed of surrounding whitespace.
func Normalize(text string) string { return strings.TrimSpace(text) }

// Message returns the message descriptor with the given name: a full name
// ("shop.Order"), a name relative to the package ("Order",
// "Order.Line"), or "" for the first message in the file.
func (s *Schema) Message(name string) (protoreflect.MessageDescriptor, error) {
	if name == "" {
		if s.file.Messages().Len() == 0 {
			return nil, fmt.Errorf("protobuf: schema defines no message")
		}
		return s.file.Messages().Get(0), nil
	}
	for _, n := range []string{name, string(s.file.Package()) + "." + name} {
		if d, ok := s.file.FindDescriptorByName(protoreflect.FullName(n)).(protoreflect.MessageDescriptor); ok {
			return d, nil
		}
	}
	return nil, fmt.Errorf("protobuf: message %q not found in schema", name)
}

// Indexes returns the position path of message md in the file: its index
// among the top-level messages, then among each nested level, as the
// Confluent wire format carries it.
func Indexes(md protoreflect.MessageDescriptor) []int {
	var idx []int
	for d := protoreflect.Descriptor(md); ; {
		m, ok := d.(protoreflect.MessageDescriptor)
		if !ok {
			break
		}
		idx = append(idx, m.Index())
		d = m.Parent()
	}
	for i, j := 0, len(idx)-1; i < j; i, j = i+1, j-1 {
		idx[i], idx[j] = idx[j], idx[i]
	}
	return idx
}

// ByIndexes returns the message at a position path (see Indexes). An empty
// path means the first message.
func (s *Schema) ByIndexes(idx []int) (protoreflect.MessageDescriptor, error) {
	if len(idx) == 0 {
		idx = []int{0}
	}
	msgs := s.file.Messages()
	var md protoreflect.MessageDescriptor
	for depth, i := range idx {
		if i < 0 || i >= msgs.Len() {
			return nil, fmt.Errorf("protobuf: message index %v: no message at position %d of level %d", idx, i, depth)
		}
		md = msgs.Get(i)
		msgs = md.Messages()
	}
	return md, nil
}
