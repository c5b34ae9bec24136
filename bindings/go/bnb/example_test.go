package bnb_test

import (
	"errors"
	"fmt"
	"math"

	"bnb/bindings/go/bnb"
)

// Quantize a vector to NF4 and back; a bad blocksize is an error value with the library's message.
func Example() {
	ctx, err := bnb.NewContext(nil) // backend from $BNB_BACKEND, else the best available
	if err != nil {
		panic(err)
	}
	defer ctx.Close()

	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	packed := make([]uint8, bnb.PackedLen(len(x)))
	absmax := make([]float32, bnb.NumBlocks(len(x), 64))
	if err := bnb.Quantize4Bit(ctx, bnb.NF4, x, 64, packed, absmax); err != nil {
		panic(err)
	}
	y := make([]float32, len(x))
	if err := bnb.Dequantize4Bit(ctx, bnb.NF4, packed, bnb.PlainScales(absmax), 64, y); err != nil {
		panic(err)
	}
	var maxErr float64
	for i := range x {
		maxErr = math.Max(maxErr, math.Abs(float64(x[i]-y[i])))
	}
	fmt.Println("max error below 0.16:", maxErr < 0.16)

	err = bnb.Quantize4Bit(ctx, bnb.NF4, x, 48, packed, make([]float32, bnb.NumBlocks(len(x), 48)))
	fmt.Println("blocksize 48 rejected:", errors.Is(err, bnb.StatusInvalidArgument))
	// Output:
	// max error below 0.16: true
	// blocksize 48 rejected: true
}
