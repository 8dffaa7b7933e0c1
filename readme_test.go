package herald_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestReadmeSemanticsNamesTests checks the semantics table of README.md:
// every test a cell cites (`TestX` under a package in brackets, or
// suite/X of the conformance suite) exists, and every row that states a
// guarantee cites at least one.
func TestReadmeSemanticsNamesTests(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	section, ok := sectionOf(string(readme), "## Semantics")
	if !ok {
		t.Fatal("README.md has no ## Semantics section")
	}
	suite := suiteTests(t)
	// The broker columns, as the packages that run the suite.
	var columns []string
	rows := 0
	for line := range strings.SplitSeq(section, "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if columns == nil {
			if cells[0] != "guarantee" {
				continue // another table
			}
			for _, c := range cells[1:] {
				columns = append(columns, columnPackage(t, c))
			}
			continue
		}
		if len(cells) != len(columns)+1 {
			if len(cells) == 3 && cells[0] != "guarantee" {
				break // the delivery modes table follows
			}
			t.Fatalf("row %q has %d cells, want %d", cells[0], len(cells), len(columns)+1)
		}
		rows++
		cited := 0
		for i, cell := range cells[1:] {
			for _, m := range suiteRef.FindAllStringSubmatch(cell, -1) {
				cited++
				if !suite[m[1]] {
					t.Errorf("row %q, column %s: suite/%s is not a test of broker/brokertest", cells[0], columns[i], m[1])
				}
				if !runsSuite(t, columns[i]) {
					t.Errorf("row %q: suite/%s cited for %s, whose tests do not run brokertest", cells[0], m[1], columns[i])
				}
			}
			for _, m := range bracketRef.FindAllStringSubmatch(cell, -1) {
				pkg := packageDir(t, m[1])
				for _, n := range testName.FindAllStringSubmatch(m[2], -1) {
					cited++
					if !hasTest(t, pkg, n[1]) {
						t.Errorf("row %q, column %s: %s names %s, which is not a test of %s", cells[0], columns[i], m[0], n[1], pkg)
					}
				}
			}
		}
		if cited == 0 && !limitRows[cells[0]] {
			t.Errorf("row %q cites no test", cells[0])
		}
	}
	if rows < 10 {
		t.Fatalf("read %d rows of the semantics table, want at least 10", rows)
	}
	// The delivery modes' list of tests: "Tests: `A`, `B/{x,y}` (pkg)."
	lists := testsLine.FindAllStringSubmatch(section, -1)
	if len(lists) == 0 {
		t.Error("the semantics section has no \"Tests: ... (package).\" list")
	}
	for _, m := range lists {
		pkg := packageDir(t, m[2])
		for _, n := range testName.FindAllStringSubmatch(m[1], -1) {
			if !hasTest(t, pkg, n[1]) {
				t.Errorf("delivery modes: %s is not a test of %s", n[1], pkg)
			}
		}
	}
}

// limitRows state limits of the brokers, not guarantees a test proves.
var limitRows = map[string]bool{"max message size": true}

var (
	suiteRef   = regexp.MustCompile(`suite/([A-Za-z0-9]+)`)
	bracketRef = regexp.MustCompile("\\[([a-z/]+) ((?:`[^`]+`(?:, )?)+)\\]")
	testName   = regexp.MustCompile("`(Test[A-Za-z0-9_]+)[^`]*`")
	testsLine  = regexp.MustCompile("(?m)^Tests: ((?:`[^`]+`,?\\s*)+)\\(([a-z/]+)\\)\\.")
)

// sectionOf returns the text of the markdown section that starts with
// heading, up to the next heading of the same level.
func sectionOf(doc, heading string) (string, bool) {
	_, rest, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		return "", false
	}
	if i := strings.Index(rest, "\n## "); i >= 0 {
		rest = rest[:i]
	}
	return rest, true
}

// columnPackage maps a column of the table to the adapter package.
func columnPackage(t *testing.T, column string) string {
	t.Helper()
	switch c := strings.ToLower(column); {
	case c == "memory":
		return "broker/memory"
	case strings.HasPrefix(c, "nats"):
		return "broker/natsjs"
	case c == "kafka":
		return "broker/kafka"
	case c == "rabbitmq":
		return "broker/rabbitmq"
	}
	t.Fatalf("semantics table: unknown broker column %q", column)
	return ""
}

// packageDir maps a package named in the table ("natsjs", "consumer",
// "cmd/herald", "herald") to its directory.
func packageDir(t *testing.T, name string) string {
	t.Helper()
	if name == "herald" {
		return "."
	}
	for _, dir := range []string{name, "broker/" + name} {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return dir
		}
	}
	t.Fatalf("semantics table names package %q, which does not exist", name)
	return ""
}

// testFuncs caches the test functions of each directory.
var testFuncs = map[string]map[string]bool{}

// hasTest reports whether a _test.go file of dir declares func name.
func hasTest(t *testing.T, dir, name string) bool {
	t.Helper()
	fns, ok := testFuncs[dir]
	if !ok {
		fns = map[string]bool{}
		files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parse %s: %v", f, err)
			}
			for _, d := range af.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil {
					fns[fd.Name.Name] = true
				}
			}
		}
		testFuncs[dir] = fns
	}
	return fns[name]
}

// runsSuite reports whether the tests of dir run the conformance suite.
func runsSuite(t *testing.T, dir string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "brokertest.Run(") {
			return true
		}
	}
	return false
}

// suiteTests returns the names of the conformance suite's tests: the
// values of broker/brokertest's Test* constants.
func suiteTests(t *testing.T) map[string]bool {
	t.Helper()
	af, err := parser.ParseFile(token.NewFileSet(), filepath.Join("broker", "brokertest", "brokertest.go"), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, d := range af.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "Test") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if v, err := strconv.Unquote(lit.Value); err == nil {
						names[v] = true
					}
				}
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found %d suite tests in broker/brokertest, want at least 10", len(names))
	}
	return names
}
