package serde_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/serde"
	"github.com/heraldhq/herald/server/registry"
)

type OrderPlaced struct {
	ID    string `json:"id"`
	Total int64  `json:"total" jsonschema:"minimum=0"`
}

func Example() {
	ctx := context.Background()
	reg, _ := schema.New(ctx, schema.NewMemoryStore())
	defer reg.Close()
	srv := httptest.NewServer(registry.NewHandler(reg))
	defer srv.Close()

	cl, _ := serde.NewClient(srv.URL)
	orders, err := serde.NewJSON[OrderPlaced](ctx, cl, "orders-value")
	if err != nil {
		panic(err)
	}
	data, _ := orders.Encode(OrderPlaced{ID: "o-1", Total: 1250})
	fmt.Printf("% x | %s\n", data[:5], data[5:])

	ev, _ := orders.Decode(ctx, data)
	fmt.Println(ev.ID, ev.Total)

	_, err = orders.Encode(OrderPlaced{ID: "o-2", Total: -5})
	fmt.Println(errors.Is(err, serde.ErrInvalid))
	// Output:
	// 00 00 00 00 01 | {"id":"o-1","total":1250}
	// o-1 1250
	// true
}
