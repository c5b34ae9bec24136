module bnb/bindings/go

go 1.19
