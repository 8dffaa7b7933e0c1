package schema_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/schema"
)

func Example() {
	ctx := context.Background()
	reg, err := schema.New(ctx, schema.NewMemoryStore())
	if err != nil {
		panic(err)
	}
	defer reg.Close()

	v1 := schema.Schema{Text: `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"}]}`}
	sv, _ := reg.Register(ctx, "orders-value", v1, schema.RegisterOptions{})
	fmt.Println("version", sv.Version, "id", sv.ID)

	_ = reg.SetConfig(ctx, "orders-value", schema.Full)
	v2 := schema.Schema{Text: `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}`}
	_, err = reg.Register(ctx, "orders-value", v2, schema.RegisterOptions{})
	fmt.Println(errors.Is(err, schema.ErrIncompatible))
	fmt.Println(err)
	// Output:
	// version 1 id 1
	// true
	// schema being registered is incompatible with an earlier schema for subject "orders-value" (FULL): version 1 (FORWARD): field "total" removed without a default at Order.total
}
