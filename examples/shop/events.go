package shop

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/schema/protobuf"
	"github.com/heraldhq/herald/schema/serde"
)

// Topics the shop uses: each service publishes its events to its own
// topic and takes the saga's commands from its own command topic.
const (
	TopicOrders            = "shop.orders"
	TopicInventory         = "shop.inventory"
	TopicPayments          = "shop.payments"
	TopicShipping          = "shop.shipping"
	TopicOrderCommands     = "shop.orders.commands"
	TopicInventoryCommands = "shop.inventory.commands"
	TopicPaymentCommands   = "shop.payments.commands"
	TopicShippingCommands  = "shop.shipping.commands"
)

// Event type names.
const (
	TypeOrderPlaced       = "shop.order.placed.v1"
	TypeOrderAccepted     = "shop.order.accepted.v1"
	TypeOrderShipped      = "shop.order.shipped.v1"
	TypeOrderCancelled    = "shop.order.cancelled.v1"
	TypeAcceptOrder       = "shop.order.accept.v1"
	TypeShipOrder         = "shop.order.ship.v1"
	TypeCancelOrder       = "shop.order.cancel.v1"
	TypeReserveStock      = "shop.stock.reserve.v1"
	TypeReleaseStock      = "shop.stock.release.v1"
	TypeStockReserved     = "shop.stock.reserved.v1"
	TypeStockUnavailable  = "shop.stock.unavailable.v1"
	TypeStockReleased     = "shop.stock.released.v1"
	TypeChargePayment     = "shop.payment.charge.v1"
	TypeRefundPayment     = "shop.payment.refund.v1"
	TypePaymentTaken      = "shop.payment.taken.v1"
	TypePaymentFailed     = "shop.payment.failed.v1"
	TypePaymentRefunded   = "shop.payment.refunded.v1"
	TypeCreateShipment    = "shop.shipment.create.v1"
	TypeCancelShipment    = "shop.shipment.cancel.v1"
	TypeShipmentCreated   = "shop.shipment.created.v1"
	TypeShipmentCancelled = "shop.shipment.cancelled.v1"
)

// Topics maps every event type of the shop to its topic.
var Topics = map[string]string{
	TypeOrderPlaced: TopicOrders, TypeOrderAccepted: TopicOrders, TypeOrderShipped: TopicOrders, TypeOrderCancelled: TopicOrders,
	TypeAcceptOrder: TopicOrderCommands, TypeShipOrder: TopicOrderCommands, TypeCancelOrder: TopicOrderCommands,
	TypeReserveStock: TopicInventoryCommands, TypeReleaseStock: TopicInventoryCommands,
	TypeStockReserved: TopicInventory, TypeStockUnavailable: TopicInventory, TypeStockReleased: TopicInventory,
	TypeChargePayment: TopicPaymentCommands, TypeRefundPayment: TopicPaymentCommands,
	TypePaymentTaken: TopicPayments, TypePaymentFailed: TopicPayments, TypePaymentRefunded: TopicPayments,
	TypeCreateShipment: TopicShippingCommands, TypeCancelShipment: TopicShippingCommands,
	TypeShipmentCreated: TopicShipping, TypeShipmentCancelled: TopicShipping,
}

// OrderPlaced is the first event of an order. It is the shop's Avro event.
type OrderPlaced struct {
	OrderID  string `json:"order_id" avro:"order_id"`
	Customer string `json:"customer" avro:"customer"`
	SKU      string `json:"sku" avro:"sku"`
	Quantity int    `json:"quantity" avro:"quantity"`
	Total    int    `json:"total_cents" avro:"total_cents"`
}

// orderPlacedAvro is OrderPlaced's schema, registered as shop.orders-OrderPlaced.
const orderPlacedAvro = `{"type":"record","name":"OrderPlaced","namespace":"shop","fields":[
 {"name":"order_id","type":"string"},
 {"name":"customer","type":"string"},
 {"name":"sku","type":"string"},
 {"name":"quantity","type":"int"},
 {"name":"total_cents","type":"int"}]}`

// shipmentProto is ShipmentCreated's schema, the shop's Protobuf event.
const shipmentProto = `syntax = "proto3";
package shop;
message ShipmentCreated {
  string order_id = 1;
  string tracking = 2;
  string sku = 3;
  int32 quantity = 4;
}
`

// OrderRef names an order: the payload of accept, the order-accepted
// reply and the commands that need nothing else.
type OrderRef struct {
	OrderID string `json:"order_id"`
}

// OrderShipped: the order left with its shipment. ShipOrder carries the same.
type OrderShipped struct {
	OrderID  string `json:"order_id"`
	Tracking string `json:"tracking"`
}

// OrderCancelled: the order was cancelled. CancelOrder carries the same.
type OrderCancelled struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// Stock is the payload of the reserve and release commands and of the
// inventory's replies.
type Stock struct {
	OrderID  string `json:"order_id"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// Payment is the payload of the charge and refund commands and of the
// payments' replies. Reason is set when a charge is refused.
type Payment struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount_cents"`
	Reason  string `json:"reason,omitempty"`
}

// Shipment is the payload of the shipment commands and of ShipmentCreated
// (in Protobuf there) and ShipmentCancelled.
type Shipment struct {
	OrderID  string `json:"order_id"`
	Tracking string `json:"tracking,omitempty"`
	SKU      string `json:"sku,omitempty"`
	Quantity int    `json:"quantity,omitempty"`
}

// Types holds the shop's event types, bound to the schemas registered
// for them: build it once per process with Register.
type Types struct {
	OrderPlaced                                   herald.EventType[OrderPlaced]
	OrderAccepted, AcceptOrder                    herald.EventType[OrderRef]
	OrderShipped, ShipOrder                       herald.EventType[OrderShipped]
	OrderCancelled, CancelOrder                   herald.EventType[OrderCancelled]
	ReserveStock, ReleaseStock                    herald.EventType[Stock]
	StockReserved, StockUnavailable, StockRelease herald.EventType[Stock]
	ChargePayment, RefundPayment                  herald.EventType[Payment]
	PaymentTaken, PaymentFailed, PaymentRefunded  herald.EventType[Payment]
	CreateShipment, CancelShipment                herald.EventType[Shipment]
	ShipmentCancelled                             herald.EventType[Shipment]
	ShipmentCreated                               herald.EventType[*dynamicpb.Message]

	shipment protoreflect.MessageDescriptor
}

// Register registers the shop's schemas in the registry (or checks that
// they are registered and compatible) and returns the event types that
// validate every event against them before it is published: OrderPlaced in
// Avro, ShipmentCreated in Protobuf, the others in JSON Schema. Subjects
// are "<topic>-<type>".
func Register(ctx context.Context, reg *serde.Client) (*Types, error) {
	t := &Types{}
	placed, err := serde.NewAvro[OrderPlaced](ctx, reg, subject(TypeOrderPlaced), orderPlacedAvro)
	if err != nil {
		return nil, fmt.Errorf("shop: schema of %s: %w", TypeOrderPlaced, err)
	}
	t.OrderPlaced = herald.Type[OrderPlaced](TypeOrderPlaced, herald.WithSchema(placed), herald.OnTopic(TopicOrders), herald.FromSource("orders"))

	ps, err := protobuf.Parse(shipmentProto)
	if err != nil {
		return nil, fmt.Errorf("shop: schema of %s: %w", TypeShipmentCreated, err)
	}
	if t.shipment, err = ps.Message("ShipmentCreated"); err != nil {
		return nil, fmt.Errorf("shop: schema of %s: %w", TypeShipmentCreated, err)
	}
	shipped, err := serde.NewProtobuf(ctx, reg, subject(TypeShipmentCreated), shipmentProto, dynamicpb.NewMessage(t.shipment))
	if err != nil {
		return nil, fmt.Errorf("shop: schema of %s: %w", TypeShipmentCreated, err)
	}
	t.ShipmentCreated = herald.Type[*dynamicpb.Message](TypeShipmentCreated, herald.WithSchema(shipped), herald.OnTopic(TopicShipping), herald.FromSource("shipping"))

	for _, d := range []struct {
		dst  *herald.EventType[OrderRef]
		name string
	}{{&t.OrderAccepted, TypeOrderAccepted}, {&t.AcceptOrder, TypeAcceptOrder}} {
		if err := jsonType(ctx, reg, d.dst, d.name, "orders"); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		dst  *herald.EventType[OrderShipped]
		name string
	}{{&t.OrderShipped, TypeOrderShipped}, {&t.ShipOrder, TypeShipOrder}} {
		if err := jsonType(ctx, reg, d.dst, d.name, "orders"); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		dst  *herald.EventType[OrderCancelled]
		name string
	}{{&t.OrderCancelled, TypeOrderCancelled}, {&t.CancelOrder, TypeCancelOrder}} {
		if err := jsonType(ctx, reg, d.dst, d.name, "orders"); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		dst  *herald.EventType[Stock]
		name string
	}{{&t.ReserveStock, TypeReserveStock}, {&t.ReleaseStock, TypeReleaseStock}, {&t.StockReserved, TypeStockReserved},
		{&t.StockUnavailable, TypeStockUnavailable}, {&t.StockRelease, TypeStockReleased}} {
		if err := jsonType(ctx, reg, d.dst, d.name, "inventory"); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		dst  *herald.EventType[Payment]
		name string
	}{{&t.ChargePayment, TypeChargePayment}, {&t.RefundPayment, TypeRefundPayment}, {&t.PaymentTaken, TypePaymentTaken},
		{&t.PaymentFailed, TypePaymentFailed}, {&t.PaymentRefunded, TypePaymentRefunded}} {
		if err := jsonType(ctx, reg, d.dst, d.name, "payments"); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		dst  *herald.EventType[Shipment]
		name string
	}{{&t.CreateShipment, TypeCreateShipment}, {&t.CancelShipment, TypeCancelShipment}, {&t.ShipmentCancelled, TypeShipmentCancelled}} {
		if err := jsonType(ctx, reg, d.dst, d.name, "shipping"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func subject(typ string) string { return Topics[typ] + "-" + typ }

func jsonType[T any](ctx context.Context, reg *serde.Client, dst *herald.EventType[T], name, source string) error {
	c, err := serde.NewJSON[T](ctx, reg, subject(name))
	if err != nil {
		return fmt.Errorf("shop: schema of %s: %w", name, err)
	}
	*dst = herald.Type[T](name, herald.WithSchema(c), herald.OnTopic(Topics[name]), herald.FromSource(source))
	return nil
}

// ShipmentMessage returns s as the Protobuf message of ShipmentCreated.
func (t *Types) ShipmentMessage(s Shipment) *dynamicpb.Message {
	m := dynamicpb.NewMessage(t.shipment)
	f := t.shipment.Fields()
	m.Set(f.ByName("order_id"), protoreflect.ValueOfString(s.OrderID))
	m.Set(f.ByName("tracking"), protoreflect.ValueOfString(s.Tracking))
	m.Set(f.ByName("sku"), protoreflect.ValueOfString(s.SKU))
	m.Set(f.ByName("quantity"), protoreflect.ValueOfInt32(int32(s.Quantity)))
	return m
}

// ShipmentOf reads a ShipmentCreated message.
func (t *Types) ShipmentOf(m *dynamicpb.Message) Shipment {
	f := t.shipment.Fields()
	return Shipment{
		OrderID:  m.Get(f.ByName("order_id")).String(),
		Tracking: m.Get(f.ByName("tracking")).String(),
		SKU:      m.Get(f.ByName("sku")).String(),
		Quantity: int(m.Get(f.ByName("quantity")).Int()),
	}
}
