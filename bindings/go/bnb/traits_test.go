package bnb

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOptimizerFactsEqualTheCTraitTable compares HasState2 and State1Parts with the library's
// trait table, src/common/optim_traits.h, row by row.
func TestOptimizerFactsEqualTheCTraitTable(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("..", "..", "..", "src", "common", "optim_traits.h"))
	if err != nil {
		t.Fatal(err)
	}
	all := []Optimizer{Adam, Momentum, RMSprop, Lion, Adagrad, AdEMAMix, LAMB, LARS}
	var rows [][]string // X(BNB_OPT_..., "name", BNB_OPT_..., states, state1_copies, ...), in enum order
	for _, line := range strings.Split(string(text), "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "X(BNB_OPT_") {
			fields := strings.Split(line, ",")
			for i := range fields {
				fields[i] = strings.TrimSpace(fields[i])
			}
			rows = append(rows, fields)
		}
	}
	if len(rows) != len(all) {
		t.Fatalf("%d rows of BNB_OPTIMIZERS, want %d", len(rows), len(all))
	}
	for i, o := range all {
		if (rows[i][3] == "2") != o.HasState2() || rows[i][4] != strconv.Itoa(o.State1Parts()) {
			t.Fatalf("%v: the C table says states %s, state1_copies %s", o, rows[i][3], rows[i][4])
		}
	}
}
