package protobuf

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/heraldhq/herald/schema/internal/compat"
)

// Ref is an imported file: Name is the import path, Text its source.
type Ref = compat.Ref

// Check returns every reason data written with writer cannot be read with
// reader (nil when it can). dir only changes the wording.
func Check(reader, writer *Schema, dir compat.Direction) []compat.Incompatibility {
	c := &checker{dir: dir, rPkg: string(reader.file.Package()), wPkg: string(writer.file.Package())}
	if c.rPkg != c.wPkg {
		from, to := c.fromTo(c.rPkg, c.wPkg)
		c.add("", "package changed from %q to %q", from, to)
	}
	c.messages(reader.file.Messages(), writer.file.Messages())
	c.enums(reader.file.Enums(), writer.file.Enums())
	return c.out
}

type checker struct {
	dir        compat.Direction
	rPkg, wPkg string
	out        []compat.Incompatibility
}

func (c *checker) add(path, format string, args ...any) {
	c.out = append(c.out, compat.Incompatibility{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) fromTo(readerSide, writerSide string) (string, string) {
	if c.dir == compat.ReaderIsNew {
		return writerSide, readerSide
	}
	return readerSide, writerSide
}

// rel returns a descriptor's name relative to its file's package, so a
// package rename is reported once, not for every type.
func rel(d protoreflect.Descriptor) string {
	pkg := string(d.ParentFile().Package())
	n := string(d.FullName())
	if pkg != "" {
		return strings.TrimPrefix(n, pkg+".")
	}
	return n
}

func (c *checker) messages(r, w protoreflect.MessageDescriptors) {
	for i := 0; i < w.Len(); i++ {
		wm := w.Get(i)
		rm := r.ByName(wm.Name())
		if rm == nil {
			c.add(rel(wm), "message %q %s", rel(wm), c.dir.Verb(false))
			continue
		}
		c.message(rm, wm)
	}
}

func (c *checker) enums(r, w protoreflect.EnumDescriptors) {
	for i := 0; i < w.Len(); i++ {
		we := w.Get(i)
		re := r.ByName(we.Name())
		if re == nil {
			c.add(rel(we), "enum %q %s", rel(we), c.dir.Verb(false))
			continue
		}
		if !re.IsClosed() {
			continue // open enums keep unknown values
		}
		vals := we.Values()
		for j := 0; j < vals.Len(); j++ {
			v := vals.Get(j)
			if re.Values().ByNumber(v.Number()) == nil {
				c.add(rel(we), "closed enum %q value %s = %d %s", rel(we), v.Name(), v.Number(), c.dir.Verb(false))
			}
		}
	}
}

// wireGroup names the set of scalar kinds a field may move between
// without changing how its values are encoded and read.
func wireGroup(k protoreflect.Kind) string {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind,
		protoreflect.BoolKind, protoreflect.EnumKind:
		return "varint"
	case protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return "zigzag"
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind:
		return "fixed32"
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind:
		return "fixed64"
	case protoreflect.StringKind, protoreflect.BytesKind:
		return "string/bytes"
	}
	return k.String()
}

func kindName(f protoreflect.FieldDescriptor) string {
	switch f.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if f.IsMap() {
			return fmt.Sprintf("map<%s, %s>", kindName(f.MapKey()), kindName(f.MapValue()))
		}
		return rel(f.Message())
	case protoreflect.EnumKind:
		return rel(f.Enum())
	}
	return f.Kind().String()
}

func label(f protoreflect.FieldDescriptor) string {
	switch {
	case f.IsMap():
		return "map"
	case f.Cardinality() == protoreflect.Repeated:
		return "repeated"
	case f.Cardinality() == protoreflect.Required:
		return "required"
	}
	return "singular"
}

func (c *checker) message(rm, wm protoreflect.MessageDescriptor) {
	path := rel(rm)
	rf, wf := rm.Fields(), wm.Fields()
	// Oneofs: fields of the writer gathered into one reader oneof.
	moved := map[protoreflect.Name][]string{}
	for i := 0; i < wf.Len(); i++ {
		w := wf.Get(i)
		r := rf.ByNumber(w.Number())
		fpath := path + "." + string(w.Name())
		if r == nil {
			continue // the reader skips it as an unknown field
		}
		if r.Name() != w.Name() {
			fpath = path + "." + string(r.Name())
		}
		c.field(r, w, fpath)
		ro, wo := r.ContainingOneof(), w.ContainingOneof()
		if ro != nil && !ro.IsSynthetic() && (wo == nil || wo.IsSynthetic()) {
			moved[ro.Name()] = append(moved[ro.Name()], string(w.Name()))
		}
	}
	for oneof, fields := range moved {
		existed := false
		if o := wm.Oneofs().ByName(oneof); o != nil && !o.IsSynthetic() {
			existed = true
		}
		switch {
		case existed:
			c.add(path+"."+string(oneof), "field(s) %s moved into the existing oneof %q", strings.Join(fields, ", "), oneof)
		case len(fields) > 1:
			c.add(path+"."+string(oneof), "fields %s moved into one new oneof %q (a writer may set several)", strings.Join(fields, ", "), oneof)
		}
	}
	for i := 0; i < rf.Len(); i++ {
		r := rf.Get(i)
		if r.Cardinality() != protoreflect.Required {
			continue
		}
		if w := wf.ByNumber(r.Number()); w == nil || w.Cardinality() != protoreflect.Required {
			c.add(path+"."+string(r.Name()), "required field %q (%d) %s", r.Name(), r.Number(), c.dir.Verb(true))
		}
	}
	c.messages(rm.Messages(), wm.Messages())
	c.enums(rm.Enums(), wm.Enums())
}

func (c *checker) field(r, w protoreflect.FieldDescriptor, path string) {
	if lr, lw := label(r), label(w); lr != lw && !(lr == "required" && lw == "singular") && !(lr == "singular" && lw == "required") {
		from, to := c.fromTo(lr, lw)
		c.add(path, "field %q (%d) changed from %s to %s", r.Name(), r.Number(), from, to)
		return
	}
	if r.IsMap() && w.IsMap() {
		c.field(r.MapKey(), w.MapKey(), path+".key")
		c.field(r.MapValue(), w.MapValue(), path+".value")
		return
	}
	rk, wk := r.Kind(), w.Kind()
	switch {
	case (rk == protoreflect.MessageKind || rk == protoreflect.GroupKind) && (wk == protoreflect.MessageKind || wk == protoreflect.GroupKind):
		if rel(r.Message()) != rel(w.Message()) {
			from, to := c.fromTo(rel(r.Message()), rel(w.Message()))
			c.add(path, "field %q (%d) message type changed from %s to %s", r.Name(), r.Number(), from, to)
		}
	case rk == protoreflect.EnumKind && wk == protoreflect.EnumKind:
		if rel(r.Enum()) != rel(w.Enum()) {
			from, to := c.fromTo(rel(r.Enum()), rel(w.Enum()))
			c.add(path, "field %q (%d) enum type changed from %s to %s", r.Name(), r.Number(), from, to)
		}
	case wireGroup(rk) != wireGroup(wk):
		from, to := c.fromTo(kindName(r), kindName(w))
		c.add(path, "field %q (%d) type changed from %s to %s, which is not wire-compatible", r.Name(), r.Number(), from, to)
	}
}
