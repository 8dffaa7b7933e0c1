package natsjs

import "testing"

func TestServerAtLeast(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"2.9.10", false}, {"v2.10.3", false}, {"2.10.4", true}, {"2.10.10", true},
		{"2.15.2", true}, {"3.0.0", true}, {"1.99.99", false}, {"2.10.4-beta.1", true}, {"garbage", true},
	} {
		if got := serverAtLeast(tc.v, 2, 10, 4); got != tc.want {
			t.Errorf("serverAtLeast(%q, 2.10.4) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
