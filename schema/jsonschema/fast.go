package jsonschema

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"

	sj "github.com/santhosh-tekuri/jsonschema/v6"
)

// fast is a validator for the keywords schemas generated from Go structs
// use (types, properties, required, additionalProperties, items, lengths,
// bounds, enum, const, pattern, $ref), run directly on the JSON bytes
// without decoding them. It only ever accepts: when it cannot say yes
// (a failure, or a case it does not decide exactly), the full validator
// runs and produces the error. A schema using any other keyword gets no
// fast validator.
type fast struct {
	anything bool
	never    bool
	types    uint8 // 0: any
	values   [][]byte
	hasVals  bool
	minLen   int
	maxLen   int
	pattern  sj.Regexp
	min, max float64 // NaN: none
	exMin    bool
	exMax    bool
	props    map[string]*fast
	required map[string]uint
	nreq     int
	addl     *fast // nil: anything; a never node: closed
	items    *fast
	minItems int
	maxItems int
}

const (
	tNull uint8 = 1 << iota
	tBool
	tNumber
	tInteger
	tString
	tArray
	tObject
)

// compileFast returns the fast validator for s, or nil.
func compileFast(s *sj.Schema) *fast {
	defer func() { _ = recover() }() // any surprise in the compiled form: no fast path
	return (&fastCompiler{seen: map[*sj.Schema]*fast{}}).compile(s)
}

type fastCompiler struct {
	seen map[*sj.Schema]*fast
	bad  bool
}

func (c *fastCompiler) compile(s *sj.Schema) *fast {
	if s == nil {
		return &fast{anything: true}
	}
	if f, ok := c.seen[s]; ok {
		return f
	}
	f := &fast{minLen: -1, maxLen: -1, min: math.NaN(), max: math.NaN(), minItems: -1, maxItems: -1}
	c.seen[s] = f
	if s.Bool != nil {
		f.anything, f.never = *s.Bool, !*s.Bool
		return f
	}
	if s.RecursiveRef != nil || s.DynamicRef != nil || s.Not != nil || len(s.AllOf) > 0 || len(s.AnyOf) > 0 ||
		len(s.OneOf) > 0 || s.If != nil || s.Format != nil || s.MaxProperties != nil || s.MinProperties != nil ||
		s.PropertyNames != nil || len(s.PatternProperties) > 0 || len(s.Dependencies) > 0 ||
		len(s.DependentRequired) > 0 || len(s.DependentSchemas) > 0 || s.UnevaluatedProperties != nil ||
		s.UniqueItems || s.Contains != nil || len(s.PrefixItems) > 0 || s.UnevaluatedItems != nil ||
		s.AdditionalItems != nil || s.ContentEncoding != nil || s.ContentMediaType != nil ||
		s.MultipleOf != nil || len(s.Extensions) > 0 || len(s.Required) > 64 {
		c.bad = true
		return nil
	}
	if s.Ref != nil {
		rest := *s
		rest.Ref = nil
		if !isEmpty(&rest) {
			c.bad = true
			return nil
		}
		target := c.compile(s.Ref)
		if c.bad {
			return nil
		}
		c.seen[s] = target
		return target
	}
	if s.Types != nil {
		for _, t := range s.Types.ToStrings() {
			switch t {
			case "null":
				f.types |= tNull
			case "boolean":
				f.types |= tBool
			case "number":
				f.types |= tNumber
			case "integer":
				f.types |= tInteger
			case "string":
				f.types |= tString
			case "array":
				f.types |= tArray
			case "object":
				f.types |= tObject
			}
		}
	}
	var vals []any
	if s.Const != nil {
		vals = []any{*s.Const}
	} else if s.Enum != nil {
		vals = s.Enum.Values
	}
	if vals != nil {
		f.hasVals = true
		for _, v := range vals {
			switch v.(type) {
			case string, bool, nil:
			default:
				c.bad = true // numbers and composites: the full validator decides
				return nil
			}
			b, err := jsonMarshal(v)
			if err != nil {
				c.bad = true
				return nil
			}
			f.values = append(f.values, b)
		}
	}
	if s.MinLength != nil {
		f.minLen = *s.MinLength
	}
	if s.MaxLength != nil {
		f.maxLen = *s.MaxLength
	}
	f.pattern = s.Pattern
	setBound := func(r interface{ Float64() (float64, bool) }, dst *float64, ex *bool, exclusive bool) {
		v, _ := r.Float64()
		*dst, *ex = v, exclusive
	}
	switch {
	case s.Minimum != nil && s.ExclusiveMinimum != nil:
		c.bad = true
		return nil
	case s.Minimum != nil:
		setBound(s.Minimum, &f.min, &f.exMin, false)
	case s.ExclusiveMinimum != nil:
		setBound(s.ExclusiveMinimum, &f.min, &f.exMin, true)
	}
	switch {
	case s.Maximum != nil && s.ExclusiveMaximum != nil:
		c.bad = true
		return nil
	case s.Maximum != nil:
		setBound(s.Maximum, &f.max, &f.exMax, false)
	case s.ExclusiveMaximum != nil:
		setBound(s.ExclusiveMaximum, &f.max, &f.exMax, true)
	}
	if len(s.Properties) > 0 {
		f.props = make(map[string]*fast, len(s.Properties))
		for name, ps := range s.Properties {
			f.props[name] = c.compile(ps)
			if c.bad {
				return nil
			}
		}
	}
	if len(s.Required) > 0 {
		f.required = make(map[string]uint, len(s.Required))
		for _, r := range s.Required {
			if _, dup := f.required[r]; !dup {
				f.required[r] = uint(len(f.required))
			}
		}
		f.nreq = len(f.required)
	}
	switch ap := s.AdditionalProperties.(type) {
	case bool:
		if !ap {
			f.addl = &fast{never: true}
		}
	case *sj.Schema:
		f.addl = c.compile(ap)
	}
	switch it := s.Items.(type) {
	case *sj.Schema:
		f.items = c.compile(it)
	case nil:
	default:
		c.bad = true
		return nil
	}
	if s.Items2020 != nil {
		f.items = c.compile(s.Items2020)
	}
	if s.MinItems != nil {
		f.minItems = *s.MinItems
	}
	if s.MaxItems != nil {
		f.maxItems = *s.MaxItems
	}
	if c.bad {
		return nil
	}
	return f
}

// accepts reports whether doc certainly is valid.
func (f *fast) accepts(doc []byte) bool {
	d := scanner{b: doc}
	if !f.value(&d, 0) {
		return false
	}
	d.ws()
	return d.i == len(d.b)
}

type scanner struct {
	b []byte
	i int
}

func (d *scanner) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

const maxFastDepth = 128

func (f *fast) value(d *scanner, depth int) bool {
	if depth > maxFastDepth || f == nil || f.never {
		return false
	}
	d.ws()
	if d.i >= len(d.b) {
		return false
	}
	start := d.i
	switch c := d.b[d.i]; {
	case c == '{':
		return f.allows(tObject) && f.object(d, depth)
	case c == '[':
		return f.allows(tArray) && f.array(d, depth)
	case c == '"':
		raw, ok := d.str()
		if !ok || !f.allows(tString) {
			return false
		}
		return f.checkString(raw) && f.checkValue(d.b[start:d.i])
	case c == 't' || c == 'f' || c == 'n':
		lit := []byte("null")
		t := tNull
		if c == 't' {
			lit, t = []byte("true"), tBool
		} else if c == 'f' {
			lit, t = []byte("false"), tBool
		}
		if !bytes.HasPrefix(d.b[d.i:], lit) {
			return false
		}
		d.i += len(lit)
		return f.allows(t) && f.checkValue(lit)
	default:
		return f.number(d)
	}
}

func (f *fast) allows(t uint8) bool {
	if f.anything || f.types == 0 {
		return true
	}
	return f.types&t != 0
}

func (f *fast) checkValue(raw []byte) bool {
	if !f.hasVals {
		return true
	}
	for _, v := range f.values {
		if bytes.Equal(v, raw) {
			return true
		}
	}
	return false
}

// str reads a string and returns its contents when they hold no escapes.
func (d *scanner) str() ([]byte, bool) {
	d.i++ // opening quote
	start := d.i
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			d.i++
			return d.b[start : d.i-1], true
		case c == '\\' || c < 0x20:
			return nil, false // escapes: leave it to the full validator
		default:
			d.i++
		}
	}
	return nil, false
}

func (f *fast) checkString(s []byte) bool {
	if f.minLen >= 0 || f.maxLen >= 0 {
		if !utf8.Valid(s) {
			return false
		}
		n := utf8.RuneCount(s)
		if (f.minLen >= 0 && n < f.minLen) || (f.maxLen >= 0 && n > f.maxLen) {
			return false
		}
	}
	if f.pattern != nil && !f.pattern.MatchString(string(s)) {
		return false
	}
	return true
}

func (f *fast) number(d *scanner) bool {
	start := d.i
	integer := true
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c >= '0' && c <= '9' || c == '-' || c == '+':
		case c == '.' || c == 'e' || c == 'E':
			integer = false
		default:
			goto done
		}
		d.i++
	}
done:
	raw := d.b[start:d.i]
	if len(raw) == 0 || f.hasVals {
		return false
	}
	if !f.allows(tNumber) && !(integer && f.allows(tInteger)) {
		return false
	}
	if math.IsNaN(f.min) && math.IsNaN(f.max) {
		_, err := strconv.ParseFloat(string(raw), 64)
		return err == nil
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(v, 0) {
		return false
	}
	// Strict comparisons only: a value equal to a bound goes to the full
	// validator, which compares exactly.
	if !math.IsNaN(f.min) && !(v > f.min) {
		return false
	}
	if !math.IsNaN(f.max) && !(v < f.max) {
		return false
	}
	return true
}

func (f *fast) object(d *scanner, depth int) bool {
	d.i++ // {
	var seen uint64
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		return f.nreq == 0
	}
	for {
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != '"' {
			return false
		}
		key, ok := d.str()
		if !ok {
			return false
		}
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return false
		}
		d.i++
		sub, named := f.props[string(key)]
		if !named {
			sub = f.addl
			if sub == nil {
				sub = anythingFast
			}
		}
		if !sub.value(d, depth+1) {
			return false
		}
		if bit, ok := f.required[string(key)]; ok {
			seen |= 1 << bit
		}
		d.ws()
		if d.i >= len(d.b) {
			return false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return f.nreq == 0 || seen == (uint64(1)<<f.nreq)-1
		default:
			return false
		}
	}
}

func (f *fast) array(d *scanner, depth int) bool {
	d.i++ // [
	n := 0
	items := f.items
	if items == nil {
		items = anythingFast
	}
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		return f.minItems <= 0
	}
	for {
		if !items.value(d, depth+1) {
			return false
		}
		n++
		d.ws()
		if d.i >= len(d.b) {
			return false
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return (f.minItems < 0 || n >= f.minItems) && (f.maxItems < 0 || n <= f.maxItems)
		default:
			return false
		}
	}
}

// anythingFast accepts any well-formed value (and checks it is one).
var anythingFast = &fast{anything: true, minLen: -1, maxLen: -1, min: math.NaN(), max: math.NaN(), minItems: -1, maxItems: -1}
