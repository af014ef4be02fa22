func.func @main(%q: !torch.vtensor<[1,?,32],f32>, %k: !torch.vtensor<[1,2,16,?],f32>) -> !torch.vtensor<[1,?,?,?],f32> {
  %int1 = torch.constant.int 1
  %int2 = torch.constant.int 2
  %int16 = torch.constant.int 16
  %int20 = torch.constant.int 20
  %int-1 = torch.constant.int -1
  %shape = torch.prim.ListConstruct %int1, %int20, %int-1, %int16 : (!torch.int, !torch.int, !torch.int, !torch.int) -> !torch.list<int>
  %v = torch.aten.view %q, %shape : !torch.vtensor<[1,?,32],f32>, !torch.list<int> -> !torch.vtensor<[1,?,?,?],f32>
  %t = torch.aten.transpose.int %v, %int1, %int2 : !torch.vtensor<[1,?,?,?],f32>, !torch.int, !torch.int -> !torch.vtensor<[1,?,?,?],f32>
  %m = torch.aten.matmul %t, %k : !torch.vtensor<[1,?,?,?],f32>, !torch.vtensor<[1,2,16,?],f32> -> !torch.vtensor<[1,?,?,?],f32>
  return %m : !torch.vtensor<[1,?,?,?],f32>
}
